#!/usr/bin/python3
"""test_redis_diff.py — differential test: the same command script against Debian's redis-server
(7.0) and the real `evstore serve`, raw RESP replies compared byte for byte (idle times and other
clock readings masked). Skipped when redis-server is not installed.
Usage: test_redis_diff.py path/to/evstore"""
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest

import test_server
from test_server import Server, free_port

# Explicit IDs only, so both servers produce the same bytes. Each line is one command.
SCRIPT = r"""
XGROUP CREATE s g 0
XGROUP CREATE s g $ MKSTREAM
XGROUP CREATE s g $
XGROUP CREATE s g2 0 ENTRIESREAD -5
XGROUP CREATE s g3 0 ENTRIESREAD 0
XADD s 1-1 a 1
XADD s 1-2 b 2
XADD s 1-3 c 3
XADD s 2-1 d 4
XADD s 2-2 e 5
XINFO GROUPS s
XREADGROUP GROUP g alice COUNT 2 STREAMS s >
XREADGROUP GROUP g bob STREAMS s >
XREADGROUP GROUP g bob STREAMS s >
XREADGROUP GROUP nope bob STREAMS s >
XREADGROUP GROUP g bob STREAMS s $
XREADGROUP GROUP g bob STREAMS s
XREADGROUP GROUP g bob STREAMS s 0
XREADGROUP GROUP g bob STREAMS s 1-3
XPENDING s g
XPENDING s g - + 10
XPENDING s g - + 10 alice
XPENDING s g (1-1 2-1 2
XPENDING s g - + 0
XPENDING s g - +
XPENDING s nope
XACK s g 1-1 1-1 9-9
XACK nope g 1-1
XACK s g bad
XDEL s 1-2
XREADGROUP GROUP g alice STREAMS s 0
XCLAIM s g carol 0 1-3 2-1 JUSTID
XCLAIM s g carol 0 1-2
XCLAIM s nope carol 0 1-2
XCLAIM s g carol 0 1-3 BOGUS
XAUTOCLAIM s g dave 0 0 COUNT 1 JUSTID
XAUTOCLAIM s g dave 0 0 COUNT 0
XAUTOCLAIM s g dave 0 0 BOGUS
XINFO GROUPS s
XINFO CONSUMERS s g
XINFO CONSUMERS s nope
XINFO GROUPS nope
XGROUP CREATECONSUMER s g erin
XGROUP CREATECONSUMER s g erin
XGROUP DELCONSUMER s g carol
XGROUP DELCONSUMER s g nobody
XGROUP SETID s g 1-1 ENTRIESREAD 1
XGROUP SETID s nope 0
XGROUP SETID s g 0 BOGUS 1
XINFO GROUPS s
XGROUP DESTROY s g
XGROUP DESTROY s g
XGROUP CREATECONSUMER nope g c
XGROUP FOO s g
XGROUP CREATE s
XGROUP DESTROY s g extra
XGROUP HELP extra
XINFO STREAM s
XADD t 1-1 a 1
XADD t 1-2 a 2
XADD t 1-3 a 3
XADD t 1-4 a 4
XGROUP CREATE t g 0
XREADGROUP GROUP g c1 NOACK COUNT 1 STREAMS t >
XREADGROUP GROUP g c1 COUNT 2 STREAMS t >
XREADGROUP GROUP g c1 COUNT 1 STREAMS t 0
XCLAIM t g c2 0 1-1 FORCE
XCLAIM t g c2 0 1-4 FORCE RETRYCOUNT 5
XCLAIM t g c2 0 1-2 RETRYCOUNT 9 JUSTID
XCLAIM t g c2 0 1-3 IDLE 1000000000000 JUSTID
XCLAIM t g c2 0 1-3 LASTID 5-0 JUSTID
XCLAIM t g c2 0 1-3 RETRYCOUNT x
XCLAIM t g c2 x 1-3
XPENDING t g IDLE 0 - + 10
XPENDING t g IDLE 0 - +
XPENDING t g - + x
XINFO GROUPS t
XDEL t 1-2
XAUTOCLAIM t g c3 0 - COUNT 10
XAUTOCLAIM t g c3 0 (1-3
XINFO STREAM t FULL
XADD u 1-1 a 1
XGROUP CREATE u g $
XINFO GROUPS u
XADD u 1-2 a 2
XINFO GROUPS u
XTRIM u MAXLEN 0
XINFO GROUPS u
XREADGROUP GROUP g c STREAMS u >
XINFO GROUPS u
XGROUP SETID u g 0
XINFO GROUPS u
XADD v 1-1 a 1
XADD v 1-2 a 2
XADD v 1-3 a 3
XADD v 1-4 a 4
XADD v 1-5 a 5
XADD v 1-6 a 6
XGROUP CREATE v g 0
XGROUP CREATE v late 1-2
XREADGROUP GROUP g c COUNT 1 STREAMS v >
XTRIM v MAXLEN 3
XINFO GROUPS v
XREADGROUP GROUP g c STREAMS v >
XREADGROUP GROUP late c COUNT 1 STREAMS v >
XINFO GROUPS v
XPENDING v g
XRANGE v (1-4 +
XRANGE v - (1-5
XREVRANGE v + (1-4
XRANGE v (18446744073709551615-18446744073709551615 +
XRANGE v - (0-0
XRANGE v (bad +
XPENDING v g (18446744073709551615-18446744073709551615 + 10
XAUTOCLAIM v g d 0 (18446744073709551615-18446744073709551615
XCLAIM v g d 0 1-1
XPENDING v g
SHUTDOWN ABORT
SHUTDOWN SAVE NOSAVE
SHUTDOWN ABORT NOW
SHUTDOWN BOGUS
MULTI
SHUTDOWN
EXEC
HELLO 3
XINFO GROUPS t
XREADGROUP GROUP g c9 STREAMS t 0
XPENDING t g
"""

MASK = [
    (re.compile(rb"[:\$](\d{13})\r\n"), b":T\r\n"),  # times in ms (XINFO FULL, XPENDING)
    (re.compile(rb"radix-tree-(keys|nodes)\r\n:\d+"), rb"radix-tree-\1\r\n:N"),  # documented: 0
    (re.compile(rb"idle\r\n:\d+"), b"idle\r\n:N"),
    (re.compile(rb"(\$\d\r\n[a-z0-9]+\r\n):\d+\r\n:(\d+)"), rb"\1:N\r\n:\2"),  # idle, deliveries
    (re.compile(rb"version\r\n\$\d+\r\n[0-9.]+\r\n"), b"version\r\nV"),  # HELLO
    (re.compile(rb"\$2\r\nid\r\n:\d+"), b"id:N"),
]


def command_bytes(line):
    args = line.split()
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a.encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out


def read_reply(f):
    line = f.readline()
    out = line
    t = line[:1]
    if t in (b"+", b"-", b":", b"_", b",", b"#", b"("):
        return out
    if t in (b"$", b"=", b"!"):
        n = int(line[1:])
        if n >= 0:
            out += f.read(n + 2)
        return out
    if t in (b"*", b"~", b">", b"%", b"|"):
        n = int(line[1:]) * (2 if t in (b"%", b"|") else 1)
        for _ in range(max(n, 0)):
            out += read_reply(f)
        return out
    raise AssertionError("unexpected reply %r" % line)


def run_script(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    f = s.makefile("rb")
    replies = []
    for line in SCRIPT.strip().splitlines():
        s.sendall(command_bytes(line))
        rep = read_reply(f)
        for rx, sub in MASK:
            rep = rx.sub(sub, rep)
        replies.append((line, rep))
    s.close()
    return replies


@unittest.skipUnless(shutil.which("redis-server"), "redis-server not installed")
class AgainstRedis(unittest.TestCase):
    def test_group_commands_reply_as_redis(self):
        d = tempfile.mkdtemp(prefix="evs-diff-")
        port = free_port()
        redis_proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                                       "--save", "", "--appendonly", "no", "--dir", d],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        srv = None
        try:
            deadline = time.time() + 10
            while time.time() < deadline:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    time.sleep(0.02)
            want = run_script(port)
            srv = Server(os.path.join(d, "data")).start()
            got = run_script(srv.port)
            diffs = ["%s\n  redis:   %r\n  evstore: %r" % (line, w, g)
                     for (line, w), (_, g) in zip(want, got) if w != g]
            self.assertEqual(diffs, [], "\n".join(diffs))
        finally:
            redis_proc.kill()
            redis_proc.wait()
            if srv:
                self.assertEqual(srv.stop(), 0)
            shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    test_server.EVSTORE = os.path.abspath(sys.argv.pop(1))
    unittest.main(verbosity=2)
