#!/usr/bin/python3
"""test_server.py — the real `evstore serve` binary on a free loopback port, driven by real
clients: redis-py (Debian's python3-redis), raw sockets for wire-level bytes, and redis-cli.
Usage: test_server.py path/to/evstore"""
import atexit
import collections
import contextlib
import http.client
import itertools
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import urllib.parse
import threading
import time
import unittest

import redis

EVSTORE = None


_ports = set()  # every port free_port gave out in this process


def free_port():
    """A port free now on 127.0.0.1, and never one this process was given before: once the
    probing socket is closed the kernel may hand the same port out again (the soak once got
    one node's HTTP port as the other's RESP port)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _ports:
            _ports.add(port)
            return port


_started = []  # every server process a test started


@atexit.register
def _kill_leftovers():
    """A test that fails between start() and stop() (in setUp, say, where tearDown does not
    run) would leave its server running after the suite: none outlives the test process."""
    for p in _started:
        if p.poll() is None:
            p.kill()
            p.wait()


class Server:
    def __init__(self, data, *extra, wrap=()):
        """wrap: a command the server runs under (fiu-run -x, for fault injection)."""
        self.data, self.extra, self.proc, self.port, self.wrap = data, extra, None, None, wrap

    def start(self, attempts=3, ports=None):
        """Start on free loopback ports. A port found free can be taken by a parallel test
        before the server binds it (the server then exits with 3): try again with new ports.
        ports: (RESP, HTTP) to start on those (a restart where clients expect it), once."""
        for attempt in range(1 if ports else attempts):
            self.port = ports[0] if ports else free_port()
            self.http_port = ports[1] if ports else free_port()
            while self.http_port == self.port:
                self.http_port = free_port()
            self.log = open(os.path.join(os.path.dirname(self.data), "server.log"), "ab")
            self.proc = subprocess.Popen(
                [*self.wrap, EVSTORE, "serve", "--data", self.data, "--port", str(self.port),
                 "--http-port", str(self.http_port), "--segment-bytes", "1m", *self.extra],
                stdout=self.log, stderr=self.log)
            _started.append(self.proc)
            deadline = time.time() + 10
            while time.time() < deadline:
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                    socket.create_connection(("127.0.0.1", self.http_port), timeout=0.2).close()
                    return self
                except OSError:
                    if self.proc.poll() is not None:
                        break
                    time.sleep(0.02)
            self.log.close()
            if self.proc.poll() is None:
                raise RuntimeError("server did not start")
            if self.proc.returncode != 3 or attempt == attempts - 1:
                raise RuntimeError("server exited with %d" % self.proc.returncode)
        raise RuntimeError("server did not start")

    def client(self, **kw):
        return redis.Redis(port=self.port, socket_timeout=10, **kw)

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()  # never leave a hung server behind; the test still fails
                self.proc.wait()
                self.log.close()
                raise AssertionError("the server did not stop within 20 s of signal %d" % sig)
        self.log.close()
        return self.proc.returncode


def eventually(cond, timeout=10, step=0.05):
    """Whether cond() comes true within timeout seconds, asked every step seconds (and once
    more at the end): for what a server does in its own time, such as freeing a dropped
    stream's memory between requests."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return True
        time.sleep(step)
    return bool(cond())


def wait_for_handler(pid, sig, timeout=20):
    """Until process pid catches signal sig (its handler installed: /proc SigCgt), up to
    timeout seconds; a signal sent before that would end it by the default action."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with open("/proc/%d/status" % pid) as fh:
                for line in fh:
                    if line.startswith("SigCgt:") and int(line.split()[1], 16) >> (sig - 1) & 1:
                        return
        except OSError:
            pass
        time.sleep(0.002)
    raise AssertionError("process %d did not catch signal %d within %d s" % (pid, sig, timeout))


def wait_for_socket(pid, timeout=20):
    """Until process pid holds a socket (it has begun to connect somewhere: its signal
    handlers, installed first thing, are in place), up to timeout seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            fds = os.listdir("/proc/%d/fd" % pid)
            if any(os.readlink("/proc/%d/fd/%s" % (pid, fd)).startswith("socket:")
                   for fd in fds):
                return
        except OSError:
            pass  # an fd closed while listed: look again
        time.sleep(0.01)
    raise AssertionError("process %d opened no socket within %d s" % (pid, timeout))


def resp_parse(buf, pos):
    """One RESP2 value at buf[pos:]: (value, next pos), or None while it is incomplete. A bulk
    string is its bytes, an array a list (a null one of either: None), any other reply its
    line with the type byte (b"+OK", b":3", b"-ERR ...")."""
    e = buf.find(b"\r\n", pos)
    if e < 0:
        return None
    kind, line = buf[pos:pos + 1], buf[pos + 1:e]
    if kind == b"$":
        ln = int(line)
        if ln < 0:
            return None, e + 2
        if len(buf) < e + 2 + ln + 2:
            return None
        return bytes(buf[e + 2:e + 2 + ln]), e + 2 + ln + 2
    if kind != b"*":
        return bytes(buf[pos:e]), e + 2
    if int(line) < 0:
        return None, e + 2
    out, at = [], e + 2
    for _ in range(int(line)):
        r = resp_parse(buf, at)
        if r is None:
            return None
        out.append(r[0])
        at = r[1]
    return out, at


def shut(*socks):
    """Shut both directions of each socket, as a proxy does when one side of a link ends
    (one already shut is left as it is)."""
    for x in socks:
        try:
            x.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def raw(port, data, read_until_close=False, timeout=5):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(data)
    out = b""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            break
        if not chunk:
            break
        out += chunk
        if not read_until_close and out.endswith(b"\r\n"):
            break
    s.close()
    return out


class Base(unittest.TestCase):
    FLAGS = ()  # extra `evstore serve` flags of a test class

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="evs-server-")
        self.data = os.path.join(self.dir, "data")
        self.srv = Server(self.data, *self.FLAGS).start()
        self.r = self.srv.client(decode_responses=True)

    def tearDown(self):
        self.r.close()
        rc = self.srv.stop()
        with open(os.path.join(self.dir, "server.log"), errors="replace") as f:
            log = f.read()
        shutil.rmtree(self.dir, ignore_errors=True)
        # a clean stop: exit 0, no sanitizer report (ASan/UBSan/LSan builds run this too)
        self.assertEqual(rc, 0, log[-3000:])
        self.assertNotIn("Sanitizer", log, log[-3000:])
        self.assertNotIn("runtime error", log, log[-3000:])


class Streams(Base):
    def test_xadd_xrange_shapes(self):
        i1 = self.r.xadd("s", {"source": "a", "type": "t", "payload": "{}"})
        i2 = self.r.xadd("s", {"k": "v"}, id="%d-*" % (int(i1.split("-")[0]) + 1))
        self.assertEqual(self.r.xlen("s"), 2)
        self.assertEqual(self.r.xrange("s"), [(i1, {"source": "a", "type": "t", "payload": "{}"}),
                                              (i2, {"k": "v"})])
        self.assertEqual(self.r.xrevrange("s", count=1), [(i2, {"k": "v"})])
        self.assertEqual(self.r.xrange("s", min="(" + i1), [(i2, {"k": "v"})])
        self.assertEqual(self.r.xrange("nope"), [])
        self.assertEqual(self.r.xlen("nope"), 0)
        self.assertEqual(self.r.type("s"), "stream")
        self.assertEqual(self.r.type("nope"), "none")
        self.assertEqual(self.r.exists("s", "nope", "s"), 2)
        self.assertEqual(self.r.keys("*"), ["s"])
        self.assertEqual(self.r.dbsize(), 1)

    def test_explicit_ids_and_errors(self):
        self.assertEqual(self.r.xadd("e", {"a": "1"}, id="5-5"), "5-5")
        with self.assertRaisesRegex(redis.ResponseError, "equal or smaller than the target stream top item"):
            self.r.xadd("e", {"a": "1"}, id="5-5")
        with self.assertRaisesRegex(redis.ResponseError, "must be greater than 0-0"):
            self.r.xadd("z", {"a": "1"}, id="0-0")
        with self.assertRaisesRegex(redis.ResponseError, "Invalid stream ID"):
            self.r.xadd("e", {"a": "1"}, id="abc")
        self.assertEqual(self.r.xadd("e", {"a": "1"}, id="5-*"), "5-6")
        self.assertIsNone(self.r.xadd("missing", {"a": "1"}, nomkstream=True))
        self.assertEqual(self.r.exists("missing"), 0)

    def test_pipeline_keeps_order(self):
        p = self.r.pipeline(transaction=False)
        for i in range(200):
            p.xadd("p", {"n": str(i)})
            if i % 50 == 0:
                p.xlen("p")
        res = p.execute()
        ids = [x for x in res if isinstance(x, str)]
        lens = [x for x in res if isinstance(x, int)]
        self.assertEqual(len(ids), 200)
        self.assertEqual(ids, sorted(ids, key=lambda s: tuple(map(int, s.split("-")))))
        self.assertEqual(lens, [1, 51, 101, 151])
        got = self.r.xrange("p")
        self.assertEqual([e[1]["n"] for e in got], [str(i) for i in range(200)])

    def test_replies_larger_than_the_socket_keep_order(self):
        """Replies go straight to the socket at the end of a loop turn; what it does not take
        goes through libevent. A pipeline of 20 replies of ~1 MiB each (20 MiB: more than the
        socket buffers hold), read only after it is all sent, fills the socket part-way through
        a reply: every reply must arrive whole and in order."""
        for i in range(100):
            self.r.xadd("big", {"v": "%04d" % i + "x" * 10000})
        n = 20
        counts = [100 - k for k in range(n)]
        cmds = []
        for c in counts:
            c = str(c).encode()
            cmds.append(b"*6\r\n$6\r\nXRANGE\r\n$3\r\nbig\r\n$1\r\n-\r\n$1\r\n+\r\n"
                        b"$5\r\nCOUNT\r\n$%d\r\n%s\r\n" % (len(c), c))
        s = socket.create_connection(("127.0.0.1", self.srv.port), timeout=10)
        s.sendall(b"".join(cmds))
        time.sleep(0.5)  # the server meets a full socket before the client reads anything

        buf, got = b"", []
        deadline = time.time() + 30
        while len(got) < n and time.time() < deadline:
            chunk = s.recv(1 << 20)
            self.assertTrue(chunk, "the server closed the connection")
            buf += chunk
            while True:
                r = resp_parse(buf, 0)
                if r is None:
                    break
                self.assertIsInstance(r[0], list, buf[:40])
                got.append(r[0])
                buf = buf[r[1]:]
        s.close()
        self.assertEqual(len(got), n)
        for k, reply in enumerate(got):
            values = [entry[1][1][:4] for entry in reply]
            self.assertEqual(values, [b"%04d" % i for i in range(counts[k])], "reply %d" % k)

    def test_spare_replies_answer_each_command_afresh(self):
        """The loop keeps the replies, holds and XADD results it answered with for the next
        commands (net/freelist.h): a spare must carry nothing of its last answer. Pipelines mix
        every kind of reply buffer (an XADD's small one, an XRANGE's over the 1 KiB a spare
        keeps, one over 64 KiB handed to the output buffer, an error), then connections of
        both protocols answer a null, which RESP2 and RESP3 spell differently."""
        big = "y" * 70000
        self.r.xadd("huge", {"v": big})
        for i in range(5):
            self.r.xadd("mid", {"v": "%d" % i + "m" * 400})
        for round_ in range(3):
            p = self.r.pipeline(transaction=False)
            for i in range(100):
                p.xadd("sp", {"n": "%d.%d" % (round_, i)})
                if i % 10 == 0:
                    p.xrange("mid")
                    p.xrange("huge")
                    p.xadd("sp", {"n": "x"}, id="1-1")  # an error: below the top
            res = p.execute(raise_on_error=False)
            k = 0
            for i in range(100):
                self.assertRegex(res[k], r"^\d+-\d+$")
                k += 1
                if i % 10 == 0:
                    self.assertEqual([e[1]["v"][:1] for e in res[k]], [str(j) for j in range(5)])
                    self.assertEqual(res[k + 1][0][1]["v"], big)
                    self.assertIsInstance(res[k + 2], redis.ResponseError)
                    k += 3
            self.assertEqual(k, len(res))
        null = (b"*6\r\n$4\r\nXADD\r\n$4\r\nnone\r\n$10\r\nNOMKSTREAM\r\n$1\r\n*\r\n"
                b"$1\r\na\r\n$1\r\n1\r\n")
        for proto, want in ((b"3", b"_\r\n"), (b"2", b"$-1\r\n")):
            s = socket.create_connection(("127.0.0.1", self.srv.port), timeout=10)
            s.sendall(b"*2\r\n$5\r\nHELLO\r\n$1\r\n%s\r\n" % proto)
            s.sendall(null * 3)
            buf = b""
            while not buf.endswith(want * 3):
                chunk = s.recv(65536)
                self.assertTrue(chunk, buf[-200:])
                buf += chunk
            s.close()
        self.assertEqual(self.r.xlen("sp"), 300)

    def test_a_pipeline_is_one_group_commit(self):
        """The commands of one read share one batch: 20 pipelines of 16 XADDs, each sent in
        one write, take one fdatasync each (a read split in two by the kernel may add one;
        without the hold it was ~1.5 per pipeline)."""
        s = socket.create_connection(("127.0.0.1", self.srv.port), timeout=10)
        cmd = b"*5\r\n$4\r\nXADD\r\n$2\r\ngc\r\n$1\r\n*\r\n$1\r\nf\r\n$1\r\nv\r\n"
        before = self.r.info("evstore")["fsyncs"]
        for _ in range(20):
            s.sendall(cmd * 16)
            got = b""
            while got.count(b"\r\n") < 32:  # 16 bulk replies: "$<len>\r\n<id>\r\n"
                got += s.recv(65536)
            self.assertEqual(got.count(b"$"), 16, got)
        s.close()
        self.assertLessEqual(self.r.info("evstore")["fsyncs"] - before, 22)
        self.assertEqual(self.r.xlen("gc"), 320)

    def test_a_batch_waiting_for_a_silent_client_is_still_committed(self):
        """A client that sends each command as soon as its reply comes is expected in the next
        batch (net/server.c G1); one that then goes silent must not hold another client's XADD
        for longer than the bound (G2): the XADD is answered and kept, and a wait that began
        ended at the bound (the only way out with the client silent). Whether a client counts
        as quick depends on this disk's commit time, so the round is tried until a wait is
        seen (five times at most)."""
        cmd = b"*5\r\n$4\r\nXADD\r\n$5\r\nquick\r\n$1\r\n*\r\n$1\r\nf\r\n$1\r\nv\r\n"
        b = self.srv.client(decode_responses=True)
        waited = False
        for round_ in range(5):
            a = socket.create_connection(("127.0.0.1", self.srv.port), timeout=10)
            for _ in range(300):  # a raw closed loop: the next XADD as soon as the reply is in
                a.sendall(cmd)
                got = b""
                while got.count(b"\r\n") < 2:  # "$<len>\r\n<id>\r\n"
                    got += a.recv(4096)
            info0 = self.r.info("evstore")
            i = b.xadd("other", {"f": str(round_)})  # a stays connected and silent
            # the writer thread may take the XADD while the batch waits (it runs what is queued
            # whenever it wakes for timed work): the wait itself ends at the bound, within 1 ms
            deadline = time.time() + 5
            while True:
                info1 = self.r.info("evstore")
                if (info1["commit_waits"] == info0["commit_waits"] or time.time() > deadline or
                        info1["commit_wait_timeouts"] > info0["commit_wait_timeouts"]):
                    break
                time.sleep(0.01)
            self.assertEqual(b.xrange("other", min=i, max=i), [(i, {"f": str(round_)})])
            self.assertLessEqual(info1["commit_wait_timeouts"], info1["commit_waits"])
            a.close()
            if info1["commit_waits"] > info0["commit_waits"]:
                self.assertGreater(info1["commit_wait_timeouts"], info0["commit_wait_timeouts"])
                waited = True
                break
        self.assertEqual(self.r.xlen("quick"), 300 * (round_ + 1))
        b.close()
        if not waited:
            print("note: no batch waited in 5 rounds (commits faster than this client)")

    def test_batches_stop_waiting_for_clients_that_keep_missing_the_wait(self):
        """G4 (net/server.c): a client that is quick and then goes silent makes the next batch
        wait until the bound. When that keeps happening, batches commit at once, but for a rare
        wait that measures again: of 64 such rounds, at most half end in a wait at the
        bound (without G4: every one). Whether a client counts as quick depends on this disk's
        commit time: with fewer than 4 waits at the bound the host made none to speak of, and
        only the entries are checked."""
        cmd = b"*5\r\n$4\r\nXADD\r\n$5\r\nquick\r\n$1\r\n*\r\n$1\r\nf\r\n$1\r\nv\r\n"
        a = socket.create_connection(("127.0.0.1", self.srv.port), timeout=10)
        b = self.srv.client(decode_responses=True)
        rounds = 64
        info0 = self.r.info("evstore")
        for i in range(rounds):
            for _ in range(3):  # a closed loop: the next XADD as soon as the reply is in
                a.sendall(cmd)
                got = b""
                while got.count(b"\r\n") < 2:
                    got += a.recv(4096)
            b.xadd("other", {"i": str(i)})  # a is silent now: this batch may wait for it
        info1 = self.r.info("evstore")
        a.close()
        b.close()
        timeouts = info1["commit_wait_timeouts"] - info0["commit_wait_timeouts"]
        self.assertEqual(self.r.xlen("other"), rounds)
        self.assertEqual(self.r.xlen("quick"), 3 * rounds)
        if timeouts < 4:
            print("note: %d waits at the bound in %d rounds (commits faster than this client)"
                  % (timeouts, rounds))
            return
        self.assertLessEqual(timeouts, rounds // 2)

    def test_xdel_and_del(self):
        a = self.r.xadd("d", {"k": "1"})
        self.r.xadd("d", {"k": "2"})
        self.assertEqual(self.r.xdel("d", a, "1-1"), 1)
        self.assertEqual(self.r.xlen("d"), 1)
        self.assertEqual(self.r.delete("d", "nope"), 1)
        self.assertEqual(self.r.exists("d"), 0)

    def test_xread_and_block_woken_by_another_client(self):
        a = self.r.xadd("x", {"k": "1"})
        self.assertEqual(self.r.xread({"x": "0"}), [["x", [(a, {"k": "1"})]]])
        self.assertEqual(self.r.xread({"x": a}), [])
        other = self.srv.client(decode_responses=True)
        t = threading.Timer(0.3, lambda: other.xadd("x", {"k": "2"}))
        t.start()
        res = self.r.xread({"x": "$"}, block=5000)
        t.join()
        self.assertEqual(res[0][0], "x")
        self.assertEqual(res[0][1][0][1], {"k": "2"})
        start = time.time()
        self.assertEqual(self.r.xread({"x": "$"}, block=200), [])
        self.assertGreaterEqual(time.time() - start, 0.18)
        other.close()

    def test_blocked_client_that_disconnects_is_released(self):
        s = socket.create_connection(("127.0.0.1", self.srv.port), timeout=5)
        s.sendall(b"XREAD BLOCK 0 STREAMS nothing $\r\n")
        deadline = time.time() + 5
        while self.r.info("clients")["blocked_clients"] != 1 and time.time() < deadline:
            time.sleep(0.02)
        self.assertEqual(self.r.info("clients")["blocked_clients"], 1)
        s.close()
        while self.r.info("clients")["blocked_clients"] != 0 and time.time() < deadline:
            time.sleep(0.02)
        self.assertEqual(self.r.info("clients")["blocked_clients"], 0)

    def test_large_argument_arriving_in_pieces(self):
        big = os.urandom(8 << 20)
        s = socket.create_connection(("127.0.0.1", self.srv.port), timeout=30)
        msg = b"*5\r\n$4\r\nXADD\r\n$3\r\nbig\r\n$1\r\n*\r\n$1\r\nf\r\n$%d\r\n" % len(big) + big + b"\r\n"
        for i in range(0, len(msg), 4096):
            s.sendall(msg[i:i + 4096])
        reply = s.recv(100)
        s.close()
        self.assertTrue(reply.startswith(b"$"), reply)
        got = self.srv.client().xrange("big")[0][1][b"f"]
        self.assertEqual(got, big)

    def test_many_arguments_arriving_in_pieces(self):
        # pieces of 997 bytes end inside headers, numbers and payloads alike; the parser
        # resumes where the last piece ended (resp_progress) and must put every argument
        # where it is once the command is whole
        fields = {("f%d" % i).encode(): os.urandom(i % 40) for i in range(20000)}
        args = [b"XADD", b"many", b"*"]
        for k, v in fields.items():
            args += [k, v]
        msg = b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)
        s = socket.create_connection(("127.0.0.1", self.srv.port), timeout=30)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for n, i in enumerate(range(0, len(msg), 997)):
            s.sendall(msg[i:i + 997])
            if n % 50 == 0:
                time.sleep(0.002)  # let the server read what came so far
        s.sendall(b"PING\r\n")  # and a command right behind it
        reply = b""
        while not reply.endswith(b"+PONG\r\n"):
            chunk = s.recv(4096)
            self.assertTrue(chunk, reply)
            reply += chunk
        s.close()
        self.assertTrue(reply.startswith(b"$"), reply)
        got = self.srv.client().xrange("many")[0][1]
        self.assertEqual(got, fields)

    def test_trimming(self):
        for i in range(30):
            self.r.xadd("tr", {"n": str(i)}, maxlen=10, approximate=False)
        self.assertEqual(self.r.xlen("tr"), 10)
        self.assertEqual([e[1]["n"] for e in self.r.xrange("tr")], [str(i) for i in range(20, 30)])
        # "~" trims only once at least 100 entries would go
        for i in range(30, 60):
            self.r.xadd("tr", {"n": str(i)}, maxlen=5, approximate=True)
        self.assertEqual(self.r.xlen("tr"), 40)
        self.assertEqual(self.r.xtrim("tr", maxlen=5, approximate=False), 35)
        self.assertEqual(self.r.xlen("tr"), 5)
        first = self.r.xrange("tr", count=2)[1][0]
        self.assertEqual(self.r.xtrim("tr", minid=first, approximate=False), 1)
        self.assertEqual(self.r.xrange("tr")[0][0], first)
        self.assertEqual(self.r.xtrim("nope", maxlen=0), 0)
        with self.assertRaisesRegex(redis.ResponseError, "LIMIT cannot be used without the special ~ option"):
            self.r.xtrim("tr", maxlen=1, approximate=False, limit=3)
        # a trimming XADD in a transaction
        p = self.r.pipeline(transaction=True)
        p.xadd("tr", {"n": "tx"}, maxlen=1, approximate=False)
        p.xlen("tr")
        self.assertEqual(p.execute()[1], 1)
        self.assertEqual(self.r.xrange("tr")[0][1], {"n": "tx"})

    def test_xinfo_stream_and_wrongtype(self):
        self.r.xadd("i", {"a": "1"}, id="1-1")
        self.r.xadd("i", {"b": "2"}, id="2-1")
        info = self.r.xinfo_stream("i")
        self.assertEqual(info["length"], 2)
        self.assertEqual(info["last-generated-id"], "2-1")
        self.assertEqual(info["entries-added"], 2)
        self.assertEqual(info["first-entry"], ("1-1", {"a": "1"}))
        self.assertEqual(info["last-entry"], ("2-1", {"b": "2"}))
        full = self.r.xinfo_stream("i", full=True)
        self.assertEqual(full["entries"], {"1-1": {"a": "1"}, "2-1": {"b": "2"}})  # redis-py's shape
        with self.assertRaisesRegex(redis.ResponseError, "no such key"):
            self.r.xinfo_stream("nope")
        with self.assertRaisesRegex(redis.ResponseError, "WRONGTYPE Operation against a key holding the wrong kind of value"):
            self.r.get("i")
        with self.assertRaisesRegex(redis.ResponseError, "unknown command 'GET'"):  # as typed, like Redis
            self.r.get("nope")

    def test_xsetid_as_redis_and_durable_across_sigkill(self):
        r = self.r
        with self.assertRaisesRegex(redis.ResponseError, "^no such key"):
            r.execute_command("XSETID", "x", "5-0")
        r.xadd("x", {"a": "1"}, id="1-0")
        r.xadd("x", {"a": "2"}, id="2-0")
        for args, msg in (
                (["x", "1-5"], "smaller than the target stream top item"),
                (["x", "9-0", "ENTRIESADDED", "1"], "entries_added specified in XSETID is smaller than the target stream length"),
                (["x", "9-0", "ENTRIESADDED", "-1"], "entries_added must be positive"),
                (["x", "9-0", "ENTRIESADDED", "z"], "not an integer"),
                (["x", "9-0", "MAXDELETEDID", "10-0"], "smaller than the provided max_deleted_entry_id"),
                (["x", "9-0", "BOGUS"], "syntax error"),
                (["x", "nope"], "Invalid stream ID")):
            with self.assertRaisesRegex(redis.ResponseError, msg):
                r.execute_command("XSETID", *args)
        self.assertTrue(r.execute_command("XSETID", "x", "50-0", "ENTRIESADDED", "70", "MAXDELETEDID", "40-0"))
        with self.assertRaisesRegex(redis.ResponseError, "equal or smaller than the target stream top item"):
            r.xadd("x", {"a": "3"}, id="49-0")
        self.srv.proc.send_signal(signal.SIGKILL)
        self.srv.proc.wait()
        self.srv.log.close()
        self.r.close()
        self.srv = Server(self.srv.data).start()
        self.r = r = self.srv.client(decode_responses=True)
        info = r.xinfo_stream("x")
        self.assertEqual((info["last-generated-id"], info["entries-added"], info["max-deleted-entry-id"], info["length"]),
                         ("50-0", 70, "40-0", 2))
        with self.assertRaisesRegex(redis.ResponseError, "smaller than current max_deleted_entry_id"):
            r.execute_command("XSETID", "x", "30-0")
        self.assertEqual(r.xadd("x", {"a": "3"}, id="51-0"), "51-0")

    def test_role_is_master_with_a_growing_offset(self):
        role, off, replicas = self.r.execute_command("ROLE")
        self.assertEqual((role, replicas), ("master", []))
        self.r.xadd("r", {"a": "1"})
        self.assertGreater(self.r.execute_command("ROLE")[1], off)

    def test_binary_values_round_trip(self):
        r = self.srv.client()
        blob = bytes(range(256)) * 100
        i = r.xadd(b"bin\x00key", {b"f\xff": blob})
        self.assertEqual(r.xrange(b"bin\x00key"), [(i, {b"f\xff": blob})])
        r.close()


class Keyspace(Base):
    def test_scan_walks_every_stream_once_despite_drops(self):
        names = ["s%03d" % i for i in range(60)]
        for n in names:
            self.r.xadd(n, {"k": "v"})
        seen, cursor, first = [], "0", True
        while first or cursor != 0:
            cursor, keys = self.r.scan(cursor=cursor, count=7)
            seen += keys
            if first:  # drop streams the walk has not reached yet, and one it has
                self.r.delete("s059", "s058", keys[0])
                first = False
        self.assertEqual(sorted(seen), sorted(names[:58]))
        self.assertEqual(len(seen), len(set(seen)))
        self.assertEqual(self.r.scan(0, match="s00*", count=100)[1], ["s001", "s002", "s003", "s004",
                                                                      "s005", "s006", "s007", "s008", "s009"])
        self.assertEqual(self.r.scan(0, _type="string", count=100)[1], [])
        with self.assertRaisesRegex(redis.ResponseError, "invalid cursor"):
            self.r.scan("x")

    def test_config_info_flushall(self):
        self.assertEqual(self.r.config_get("appendfsync"), {"appendfsync": "always"})
        self.assertTrue(self.r.config_set("stream-node-max-entries", 50))
        self.assertEqual(self.r.config_get("stream-node-*")["stream-node-max-entries"], "50")
        with self.assertRaisesRegex(redis.ResponseError, "immutable"):
            self.r.config_set("appendfsync", "no")
        info = self.r.info("clients")
        self.assertGreaterEqual(info["connected_clients"], 1)
        self.assertEqual(info["blocked_clients"], 0)
        self.r.xadd("a", {"k": "v"})
        self.r.xadd("b", {"k": "v"})
        self.assertTrue(self.r.flushall())
        self.assertEqual(self.r.dbsize(), 0)
        self.assertEqual(self.r.xlen("a"), 0)

    def test_config_resetstat_restarts_the_info_counters_only(self):
        for _ in range(3):
            self.r.xadd("a", {"k": "v"})
        self.assertGreaterEqual(self.r.info("stats")["evstore_appends"], 3)
        self.assertTrue(self.r.config_resetstat())
        self.assertEqual(self.r.info("stats")["evstore_appends"], 0)
        self.assertEqual(self.r.info("evstore")["fsyncs"], 0)
        self.r.xadd("a", {"k": "v"})
        stats = self.r.info("stats")
        self.assertEqual(stats["evstore_appends"], 1)
        # Redis's own counters restart too: commands run since (RESETSTAT, two INFOs, XADD)
        self.assertEqual(stats["total_commands_processed"], 4)
        self.assertEqual(stats["total_connections_received"], 0)
        other = self.srv.client()
        other.ping()
        stats = self.r.info()  # all sections: redis-cli --stat and exporters read these
        self.assertEqual((stats["total_commands_processed"], stats["total_connections_received"]),
                         (6, 1))
        self.assertEqual(stats["process_id"], self.srv.proc.pid)
        self.assertGreater(stats["used_memory"], 0)
        self.assertGreaterEqual(stats["uptime_in_seconds"], 0)
        other.close()
        # /metrics keeps counting since start (Prometheus counters never go back)
        status, body, _ = http_req(self.srv, "GET", "/metrics")
        self.assertEqual(status, 200)
        self.assertRegex(body.decode(), r"(?m)^evstore_appends_total 4$")

    def test_client_name_is_kept_per_connection(self):
        r = self.srv.client(decode_responses=True)
        self.assertIsNone(r.client_getname())
        self.assertTrue(r.client_setname("worker-1"))
        self.assertEqual(r.client_getname(), "worker-1")
        self.assertIsNone(self.r.client_getname())  # another connection's own
        with self.assertRaisesRegex(redis.ResponseError, "cannot contain spaces"):
            r.client_setname("two words")
        self.assertEqual(r.client_getname(), "worker-1")
        self.assertTrue(r.client_setname(""))  # empty: no name
        self.assertIsNone(r.client_getname())
        r.execute_command("HELLO", "2", "SETNAME", "via-hello")
        self.assertEqual(r.client_getname(), "via-hello")
        r.close()


class Transactions(Base):
    def test_exec_appends_atomically_and_reads_its_writes(self):
        p = self.r.pipeline(transaction=True)
        p.xadd("t1", {"k": "1"}, id="1-1")
        p.xadd("t2", {"k": "2"}, id="1-1")
        p.xlen("t1")
        p.xrange("t2")
        self.assertEqual(p.execute(), ["1-1", "1-1", 1, [("1-1", {"k": "2"})]])

    def test_a_refused_append_fails_alone_as_in_redis(self):
        self.r.xadd("t3", {"k": "0"}, id="5-0")
        p = self.r.pipeline(transaction=True)
        p.xadd("t3", {"k": "1"}, id="6-0")
        p.xadd("t3", {"k": "2"}, id="4-0")  # smaller than the top: refused, alone
        p.xadd("t3", {"k": "3"}, id="7-0")
        p.xadd("t3new", {"k": "4"}, nomkstream=True)  # no such stream: null
        p.xlen("t3")
        res = p.execute(raise_on_error=False)
        self.assertEqual(res[0], "6-0")
        self.assertIsInstance(res[1], redis.ResponseError)
        self.assertIn("equal or smaller", str(res[1]))
        self.assertEqual(res[2], "7-0")
        self.assertIsNone(res[3])
        self.assertEqual(res[4], 3)
        self.assertEqual([e[0] for e in self.r.xrange("t3")], ["5-0", "6-0", "7-0"])
        self.assertEqual(self.r.exists("t3new"), 0)
        # the appended ones are one group in the log: after a SIGKILL and restart, all there
        self.srv.stop(signal.SIGKILL)
        self.srv.start()
        self.r = self.srv.client(decode_responses=True)
        self.assertEqual([e[0] for e in self.r.xrange("t3")], ["5-0", "6-0", "7-0"])

    def test_watch_aborts_exec_when_a_watched_key_changes(self):
        r, other = self.r, self.srv.client(decode_responses=True)
        r.xadd("w", {"a": "1"}, id="1-0")
        # untouched: EXEC runs
        p = r.pipeline(transaction=True)
        p.watch("w", "absent")
        p.multi()
        p.xadd("w", {"a": "2"}, id="2-0")
        self.assertEqual(p.execute(), ["2-0"])
        # each kind of change by another client aborts: nothing of the transaction lands
        changes = [lambda: other.xadd("w", {"x": "y"}),
                   lambda: other.xdel("w", "1-0"),
                   lambda: other.xtrim("w", maxlen=0, approximate=False),
                   lambda: other.execute_command("XSETID", "w", "99999999999999-0"),
                   lambda: other.delete("w"),
                   lambda: other.xadd("absent", {"x": "y"})]
        for n, change in enumerate(changes):
            r.xadd("w", {"a": "base"})
            p = r.pipeline(transaction=True)
            p.watch("w", "absent")
            change()
            p.multi()
            p.xadd("w", {"mine": str(n)})
            p.xrange("w")
            with self.assertRaises(redis.WatchError, msg="change %d" % n):
                p.execute()
            entries = r.xrange("w")
            self.assertFalse([e for e in entries if "mine" in e[1]], "change %d" % n)
            other.delete("absent")
        # the transaction's own writes before its first XADD never abort it (Redis runs
        # these; XRETENTION SET and XGROUP CREATE ... MKSTREAM once made the EXEC answer a
        # null array after they had run)
        for n, write in enumerate((("XRETENTION", "w", "SET", "MAXENTRIES", "1000"),
                                   ("XGROUP", "CREATE", "fresh", "g", "$", "MKSTREAM"),
                                   ("XDEL", "w", "1-0"))):
            p = r.pipeline(transaction=True)
            p.watch("w", "fresh")
            p.multi()
            p.execute_command(*write)
            p.xadd("fresh", {"own": str(n)})
            res = p.execute()
            self.assertEqual(len(res), 2, write)
            self.assertEqual(r.xrange("fresh")[-1][1], {"own": str(n)}, write)
        # WATCH inside MULTI, UNWATCH, DISCARD and EXEC clear the watch
        self.assertEqual(raw(self.srv.port, b"MULTI\r\nWATCH w\r\nDISCARD\r\n", read_until_close=False, timeout=2)[:5], b"+OK\r\n")
        s = socket.create_connection(("127.0.0.1", self.srv.port), timeout=5)
        s.sendall(b"MULTI\r\nWATCH w\r\n")
        buf = b""
        while buf.count(b"\r\n") < 2:
            buf += s.recv(4096)
        self.assertEqual(buf, b"+OK\r\n-ERR WATCH inside MULTI is not allowed\r\n")
        s.close()
        r.watch("w")
        r.unwatch()
        other.xadd("w", {"x": "y"})
        p = r.pipeline(transaction=True)
        p.xadd("w", {"a": "3"})
        self.assertEqual(len(p.execute()), 1)
        other.close()

    def test_watch_holds_against_concurrent_appenders(self):
        # a counter kept in the stream: read the top, append top+1 under WATCH. Four clients
        # race; every value must appear exactly once (lost updates would repeat one).
        r = self.r
        r.xadd("ctr", {"v": "0"})
        done = []

        def worker(k):
            c = self.srv.client(decode_responses=True)
            ok = 0
            while ok < 25:
                with c.pipeline(transaction=True) as p:
                    try:
                        p.watch("ctr")
                        top = int(p.xrevrange("ctr", count=1)[0][1]["v"])
                        p.multi()
                        p.xadd("ctr", {"v": str(top + 1)})
                        p.execute()
                        ok += 1
                    except redis.WatchError:
                        pass
            done.append(ok)
            c.close()

        ts = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(60)
        self.assertEqual(done, [25] * 4)
        values = [int(e[1]["v"]) for e in r.xrange("ctr")]
        self.assertEqual(values, list(range(101)))

    def test_execabort_discard_and_nesting(self):
        self.assertEqual(raw(self.srv.port, b"EXEC\r\n"), b"-ERR EXEC without MULTI\r\n")
        self.assertEqual(raw(self.srv.port, b"DISCARD\r\n"), b"-ERR DISCARD without MULTI\r\n")
        out = raw(self.srv.port, b"MULTI\r\nFOO\r\nXADD t4 1-1 k v\r\nEXEC\r\n", read_until_close=False,
                  timeout=2)
        s = socket.create_connection(("127.0.0.1", self.srv.port), timeout=5)
        s.sendall(b"MULTI\r\nFOO\r\nXADD t4 1-1 k v\r\nEXEC\r\nMULTI\r\nMULTI\r\nDISCARD\r\n")
        time.sleep(0.3)
        got = s.recv(65536)
        s.close()
        self.assertEqual(got, b"+OK\r\n-ERR unknown command 'FOO', with args beginning with: \r\n+QUEUED\r\n"
                              b"-EXECABORT Transaction discarded because of previous errors.\r\n"
                              b"+OK\r\n-ERR MULTI calls can not be nested\r\n+OK\r\n")
        self.assertTrue(out.startswith(b"+OK"))
        self.assertEqual(self.r.exists("t4"), 0)


class Wire(Base):
    def test_command_names_in_any_case(self):
        """Commands are looked up by name in any letter case (commands_find's hash): each of
        these is found (an arity error at most, never "unknown command"), near misses are
        not, and QUIT, last, answers +OK and closes."""
        def cmd(*args):
            return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)
        found = [b"FlushDB", b"flushall", b"sLaVeOf", b"REPLICAOF", b"XaDd", b"xack", b"XAUTOCLAIM",
                 b"xRetention", b"Ping", b"DBSIZE", b"rePLconf", b"ReplSync"]
        missing = [b"XADDD", b"XAD", b"xaddx", b"x" * 40]
        buf = raw(self.srv.port, b"".join(cmd(n) if n.lower() in (b"flushdb", b"flushall", b"ping",
                                                                  b"dbsize")
                                          else cmd(n, b"a") for n in found + missing) + cmd(b"QuIt"),
                  read_until_close=True, timeout=10)
        lines = [ln for ln in buf.split(b"\r\n") if ln[:1] in (b"+", b"-", b":")]
        self.assertEqual(len(lines), len(found) + len(missing) + 1, buf)
        for name, ln in zip(found, lines):
            self.assertNotIn(b"unknown command", ln, name)
        for name, ln in zip(missing, lines[len(found):]):
            self.assertTrue(ln.startswith(b"-ERR unknown command"), (name, ln))
        self.assertEqual(lines[-1], b"+OK")

    def test_http_requests_sent_to_the_resp_port_run_nothing(self):
        """A web page can make a browser POST to the RESP port (cross-protocol scripting), its
        body lines being RESP inline commands. As Redis: a "POST" or "Host:" command closes the
        connection at once, unanswered, and nothing after it runs; logged once a minute."""
        self.r.xadd("kept", {"a": "1"})
        body = b"XADD pwned * f v\r\nFLUSHALL\r\n"
        for req in (b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\n"
                    b"Content-Length: %d\r\n\r\n" % len(body) + body,
                    b"PUT / HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n" + body,
                    b"*1\r\n$4\r\npost\r\n" + body):
            out = raw(self.srv.port, req, read_until_close=True)
            self.assertNotIn(b"+OK", out)  # (PUT's own line is answered: unknown command)
            self.assertFalse(out.startswith(b"-ERR unknown command 'POST'"), out)
        self.assertEqual(self.r.xlen("kept"), 1)
        self.assertEqual(self.r.exists("pwned"), 0)
        with open(os.path.join(self.dir, "server.log"), errors="replace") as f:
            self.assertEqual(f.read().count("Possible SECURITY ATTACK detected"), 1)

    def test_errors_as_redis_words_them(self):
        self.assertEqual(raw(self.srv.port, b"*2\r\n$3\r\nfoo\r\n$1\r\na\r\n"),
                         b"-ERR unknown command 'foo', with args beginning with: 'a' \r\n")
        self.assertEqual(raw(self.srv.port, b"*1\r\n$4\r\nxlen\r\n"),
                         b"-ERR wrong number of arguments for 'xlen' command\r\n")
        self.assertEqual(raw(self.srv.port, b"PING\r\n"), b"+PONG\r\n")
        self.assertEqual(raw(self.srv.port, b'ECHO "a b"\r\n'), b"$3\r\na b\r\n")
        # every "Try X HELP." is answered: Redis's frame, the subcommands evstore answers
        plain = self.srv.client(decode_responses=True)
        plain.response_callbacks.clear()  # (redis-py parses COMMAND's reply as the table)
        for cmd in ("XINFO", "XGROUP", "CONFIG", "CLIENT", "COMMAND"):
            lines = plain.execute_command(cmd, "HELP")
            self.assertTrue(lines[0].startswith(cmd + " <subcommand>"), lines[0])
            self.assertEqual(lines[-2:], ["HELP", "    Prints this help."])
            self.assertIn("Try %s HELP." % cmd, str(self._err(cmd, "NOPE")))
        plain.close()

    def _err(self, *args):
        try:
            self.r.execute_command(*args)
        except redis.ResponseError as e:
            return e
        self.fail("no error for %r" % (args,))

    def test_protocol_errors_close_only_that_connection(self):
        keep = self.srv.client(decode_responses=True)
        keep.ping()
        out = raw(self.srv.port, b"*20000000\r\n", read_until_close=True)
        self.assertEqual(out, b"-ERR Protocol error: invalid multibulk length\r\n")
        out = raw(self.srv.port, b"*3\r\n$3\r\nSET\r\n$1\r\nx\r\nfooz\r\n", read_until_close=True)
        self.assertEqual(out, b"-ERR Protocol error: expected '$', got 'f'\r\n")
        out = raw(self.srv.port, b"*1\r\n$999999999999\r\n", read_until_close=True)
        self.assertEqual(out, b"-ERR Protocol error: invalid bulk length\r\n")
        out = raw(self.srv.port, b'ECHO "unbalanced\r\n', read_until_close=True)
        self.assertEqual(out, b"-ERR Protocol error: unbalanced quotes in request\r\n")
        self.assertTrue(keep.ping())
        keep.close()

    def test_hello_3_and_resp3_replies(self):
        out = raw(self.srv.port, b"HELLO 3\r\n")
        self.assertTrue(out.startswith(b"%7\r\n"), out)
        s = socket.create_connection(("127.0.0.1", self.srv.port), timeout=5)
        s.sendall(b"HELLO 3\r\n")
        time.sleep(0.1)
        s.recv(65536)
        s.sendall(b"XREAD STREAMS nothing 0\r\n")
        time.sleep(0.1)
        self.assertEqual(s.recv(65536), b"_\r\n")
        s.sendall(b"XADD r3 1-1 k v\r\nXREAD STREAMS r3 0\r\n")
        time.sleep(0.2)
        got = s.recv(65536)
        self.assertEqual(got, b"$3\r\n1-1\r\n%1\r\n$2\r\nr3\r\n*1\r\n*2\r\n$3\r\n1-1\r\n*2\r\n$1\r\nk\r\n$1\r\nv\r\n")
        s.close()

    def test_redis_cli(self):
        cli = shutil.which("redis-cli")
        if not cli:
            self.skipTest("redis-cli not installed")
        run = lambda *a: subprocess.run([cli, "-p", str(self.srv.port), *a], capture_output=True,
                                        text=True, timeout=10).stdout
        self.assertEqual(run("XADD", "c", "7-1", "f", "v").strip(), "7-1")
        self.assertEqual(run("XADD", "c", "7-1", "f", "v").strip(),
                         "ERR The ID specified in XADD is equal or smaller than the target stream top item")
        self.assertEqual(run("SELECT", "1").strip(), "ERR DB index is out of range")


@contextlib.contextmanager
def workers(fn, n, stop):
    """Run fn(0) .. fn(n - 1) on threads while the block runs, then set `stop` (the workers
    loop until it is set) and wait for them, also when the block raised."""
    threads = [threading.Thread(target=fn, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    try:
        yield
    finally:
        stop.set()
        for t in threads:
            t.join()


def run_workers(fn, n, seconds, stop):
    """workers() for `seconds`."""
    with workers(fn, n, stop):
        time.sleep(seconds)


def http_req(srv, method, path, body=None, headers=None):
    c = http.client.HTTPConnection("127.0.0.1", srv.http_port, timeout=10)
    data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
    c.request(method, path, body=data, headers=headers or {})
    r = c.getresponse()
    raw_body = r.read()
    c.close()
    try:
        return r.status, json.loads(raw_body), r
    except ValueError:
        return r.status, raw_body, r


class Http(Base):
    def test_publish_and_list_recent(self):
        st, body, _ = http_req(self.srv, "POST", "/streams/orders/events",
                           {"source": "web", "type": "order.created", "payload": {"n": 1}, "region": "eu"})
        self.assertEqual(st, 201)
        first = body["id"]
        st, body, _ = http_req(self.srv, "POST", "/streams/orders/events",
                           [{"type": "t%d" % (i % 3), "payload": i} for i in range(120)])
        self.assertEqual(st, 201)
        self.assertEqual(len(body["ids"]), 120)
        # the same entries through RESP
        e = self.r.xrange("orders", count=1)[0]
        self.assertEqual(e, (first, {"source": "web", "type": "order.created", "payload": '{"n":1}',
                                     "region": "eu"}))
        st, body, _ = http_req(self.srv, "GET", "/streams/orders/events?reverse=1&limit=50")
        self.assertEqual(st, 200)
        self.assertEqual([ev["payload"] for ev in body["events"]], list(range(119, 69, -1)))
        self.assertEqual(body["next"], body["events"][-1]["id"])
        st, body, _ = http_req(self.srv, "GET", "/streams/orders/events?limit=1")
        self.assertEqual(body["events"][0], {"id": first, "ts": body["events"][0]["ts"], "source": "web",
                                             "type": "order.created", "payload": {"n": 1},
                                             "fields": {"region": "eu"}})
        # page forward with next
        seen, after = [], None
        while True:
            q = "/streams/orders/events?limit=40&type=t1" + ("&after=" + after if after else "")
            st, body, _ = http_req(self.srv, "GET", q)
            seen += [ev["payload"] for ev in body["events"]]
            if body["next"] is None:
                break
            after = body["next"]
        self.assertEqual(seen, [i for i in range(120) if i % 3 == 1])

    def test_resp_entries_read_over_http(self):
        self.r.xadd("mixed", {"type": "x", "payload": "not json", "other": "o"})
        st, body, _ = http_req(self.srv, "GET", "/streams/mixed/events")
        ev = body["events"][0]
        self.assertEqual((ev["type"], ev["payload"], ev["fields"]), ("x", "not json", {"other": "o"}))

    def test_errors_are_json_with_status(self):
        self.assertEqual(http_req(self.srv, "POST", "/streams/s/events", b"{bad")[0:2][0], 400)
        st, body, _ = http_req(self.srv, "POST", "/streams/s/events", b"{bad")
        self.assertEqual(body["code"], "bad_json")
        st, body, _ = http_req(self.srv, "POST", "/streams/s/events", {"source": 5})
        self.assertEqual((st, body["code"]), (400, "bad_event"))
        st, body, _ = http_req(self.srv, "GET", "/streams/s/events?after=zzz")
        self.assertEqual((st, body["code"]), (400, "bad_id"))
        st, body, _ = http_req(self.srv, "GET", "/streams/nope/events")
        self.assertEqual((st, body["code"]), (404, "not_found"))
        st, body, r = http_req(self.srv, "PUT", "/streams/s/events", b"{}")
        self.assertEqual((st, body["code"]), (405, "method_not_allowed"))
        self.assertEqual(r.getheader("Allow"), "GET, POST")
        st, body, _ = http_req(self.srv, "GET", "/nothing")
        self.assertEqual(st, 404)

    def _sse_events(self, path, headers, n, after_connect=None):
        c = http.client.HTTPConnection("127.0.0.1", self.srv.http_port, timeout=10)
        c.request("GET", path, headers=headers)
        r = c.getresponse()
        self.assertEqual(r.status, 200)
        self.assertEqual(r.getheader("Content-Type"), "text/event-stream")
        if after_connect:
            after_connect()
        got, cur_id = [], None
        while len(got) < n:
            line = r.fp.readline().decode().rstrip("\n")
            if line.startswith("id: "):
                cur_id = line[4:]
            elif line.startswith("data: "):
                got.append((cur_id, json.loads(line[6:])))
        c.close()
        return got

    def test_live_tail_and_resume(self):
        self.r.xadd("live", {"type": "old"}, id="1-1")
        got = self._sse_events("/streams/live/events/live", {}, 2, after_connect=lambda: (
            self.r.xadd("live", {"type": "a"}, id="2-1"),
            http_req(self.srv, "POST", "/streams/live/events", {"type": "b", "payload": {"x": 1}})))
        self.assertEqual([(i, e["type"]) for i, e in got][0], ("2-1", "a"))
        self.assertEqual(got[1][1]["payload"], {"x": 1})
        resumed = self._sse_events("/streams/live/events/live", {"Last-Event-ID": "1-1"}, 2)
        self.assertEqual([i for i, _ in resumed], ["2-1", got[1][0]])
        # a subscriber that went away must not disturb later appends
        for i in range(50):
            self.r.xadd("live", {"type": "after"})
        self.assertEqual(self.r.xlen("live"), 53)

    def test_many_live_tails_of_one_stream(self):
        """Tails of one stream share the formatting of what a batch made visible (one tail's
        bytes go to the next at the same place): each of them, at the end or catching up from
        far behind while entries come, and a tail of another stream, gets exactly its
        entries, in order, none twice."""
        p = self.r.pipeline(transaction=False)
        for i in range(1, 10001):  # the tails behind catch up 1,000 a loop turn, meanwhile
            p.xadd("fan", {"n": "old%d" % i}, id="%d-1" % i)
        p.xadd("other", {"n": "o0"}, id="1-1")
        p.execute()
        tails = []
        for path, headers in ([("/streams/fan/events/live", {})] * 3 +
                              [("/streams/fan/events/live", {"Last-Event-ID": "1-1"}),
                               ("/streams/fan/events/live", {"Last-Event-ID": "5000-1"})] +
                              [("/streams/other/events/live", {})]):
            c = http.client.HTTPConnection("127.0.0.1", self.srv.http_port, timeout=10)
            c.request("GET", path, headers=headers)
            r = c.getresponse()
            self.assertEqual(r.status, 200)
            tails.append((c, r))
        for round_ in range(6):
            p = self.r.pipeline(transaction=False)
            for k in range(5):
                p.xadd("fan", {"n": "new%d" % (round_ * 5 + k)})
            p.xadd("other", {"n": "o%d" % (round_ + 1)})
            p.execute()
        new = ["new%d" % i for i in range(30)]
        old = ["old%d" % i for i in range(2, 10001)]
        want = [new] * 3 + [old + new, old[4999:] + new] + [["o%d" % i for i in range(1, 7)]]
        for (c, r), expect in zip(tails, want):
            got, ids = [], []
            while len(got) < len(expect):
                line = r.fp.readline().decode().rstrip("\n")
                if line.startswith("id: "):
                    ids.append(line[4:])
                elif line.startswith("data: "):
                    got.append(json.loads(line[6:])["fields"]["n"])
            self.assertEqual(got, expect)
            self.assertEqual(ids, sorted(ids, key=lambda i: tuple(map(int, i.split("-")))))
            c.close()

    def test_idempotency_key(self):
        h = {"Idempotency-Key": "order-42"}
        st, first, _ = http_req(self.srv, "POST", "/streams/idem/events", {"type": "t"}, h)
        self.assertEqual(st, 201)
        st, again, r = http_req(self.srv, "POST", "/streams/idem/events", {"type": "t"}, h)
        self.assertEqual((st, again), (201, first))
        self.assertEqual(r.getheader("Idempotent-Replayed"), "true")
        self.assertEqual(self.r.xlen("idem"), 1)
        # arrays too, and another key is another publish
        hb = {"Idempotency-Key": "batch-1"}
        st, b1, _ = http_req(self.srv, "POST", "/streams/idem/events", [{"type": "a"}, {"type": "b"}], hb)
        st, b2, _ = http_req(self.srv, "POST", "/streams/idem/events", [{"type": "a"}, {"type": "b"}], hb)
        self.assertEqual(b1, b2)
        self.assertEqual(len(b1["ids"]), 2)
        self.assertEqual(self.r.xlen("idem"), 3)
        # concurrent retries of a new key: one append, one answer for all
        hc = {"Idempotency-Key": "burst"}
        results = []
        ts = [threading.Thread(target=lambda: results.append(
            http_req(self.srv, "POST", "/streams/idem/events", {"type": "c"}, hc)[1])) for _ in range(8)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        self.assertEqual(len({r["id"] for r in results}), 1)
        self.assertEqual(self.r.xlen("idem"), 4)
        # the window survives a restart
        self.srv.stop()
        self.srv.start()
        self.r = self.srv.client(decode_responses=True)
        st, after, _ = http_req(self.srv, "POST", "/streams/idem/events", {"type": "t"}, h)
        self.assertEqual((st, after), (201, first))
        self.assertEqual(self.r.xlen("idem"), 4)
        st, body, _ = http_req(self.srv, "POST", "/streams/idem/events", {"type": "t"},
                               {"Idempotency-Key": "x" * 300})
        self.assertEqual((st, body["code"]), (400, "bad_idempotency_key"))

    def test_idempotent_retries_after_a_kill_append_once(self):
        """Publishers with a new key per publish (single events and arrays), the server killed
        under them, then every publish sent again with its key: each key's events are in the
        stream exactly once, and a publish answered before the kill is answered the same. Once
        more after an index rebuild (killed again, index deleted)."""
        answers, sent, lock, stop = {}, [], threading.Lock(), threading.Event()

        def body(key, i):
            return [{"type": "a", "payload": key}, {"type": "b", "payload": key}] if i % 3 == 0 \
                else {"type": "t", "payload": key}

        def publisher(w):
            for i in itertools.count():
                if stop.is_set():
                    return
                key = "w%d-%d" % (w, i)
                with lock:
                    sent.append((key, i))
                try:
                    st, b, _ = http_req(self.srv, "POST", "/streams/once/events", body(key, i),
                                        {"Idempotency-Key": key})
                except (OSError, http.client.HTTPException):
                    return  # the kill
                if st == 201:
                    with lock:
                        answers[key] = b

        ts = [threading.Thread(target=publisher, args=(w,)) for w in range(4)]
        for t in ts:
            t.start()
        time.sleep(0.6)
        self.srv.stop(signal.SIGKILL)
        stop.set()
        for t in ts:
            t.join()
        self.srv.start()
        self.assertGreater(len(answers), 0)
        want = {key: 2 if i % 3 == 0 else 1 for key, i in sent}
        for rebuilt in (False, True):
            if rebuilt:  # the keys come back from the log alone
                self.srv.stop(signal.SIGKILL)
                shutil.rmtree(os.path.join(self.srv.data, "index"))
                self.srv.start()
            for key, i in sent:
                st, b, _ = http_req(self.srv, "POST", "/streams/once/events", body(key, i),
                                    {"Idempotency-Key": key})
                self.assertEqual(st, 201, b)
                if key in answers:
                    self.assertEqual(b, answers[key], key)
                answers[key] = b
            self.r = self.srv.client(decode_responses=True)
            counts = collections.Counter(json.loads(f["payload"]) for _, f in self.r.xrange("once"))
            self.assertEqual(counts, want, "index rebuilt" if rebuilt else "after the kill")

    def test_event_id_is_an_idempotency_key(self):
        ev = {"id": "evt-7", "type": "t", "payload": {"n": 1}}
        st, first, _ = http_req(self.srv, "POST", "/streams/eid/events", ev)
        self.assertEqual(st, 201)
        st, again, r = http_req(self.srv, "POST", "/streams/eid/events", ev)
        self.assertEqual((st, again, r.getheader("Idempotent-Replayed")), (201, first, "true"))
        self.assertEqual(self.r.xlen("eid"), 1)
        # the id is kept as a field of the event
        st, listed, _ = http_req(self.srv, "GET", "/streams/eid/events")
        self.assertEqual(listed["events"][0]["fields"], {"id": "evt-7"})
        # another id, or the same id on another stream, is another publish
        self.assertNotEqual(http_req(self.srv, "POST", "/streams/eid/events", dict(ev, id="evt-8"))[1], first)
        self.assertEqual(http_req(self.srv, "POST", "/streams/eid2/events", ev)[0], 201)
        self.assertEqual((self.r.xlen("eid"), self.r.xlen("eid2")), (2, 1))
        # a header key with the same text is a different key; the header wins over the id
        st, hk, _ = http_req(self.srv, "POST", "/streams/eid/events", ev, {"Idempotency-Key": "evt-7"})
        self.assertNotEqual(hk, first)
        self.assertEqual(self.r.xlen("eid"), 3)
        # the window survives a restart
        self.srv.stop()
        self.srv.start()
        self.r = self.srv.client(decode_responses=True)
        self.assertEqual(http_req(self.srv, "POST", "/streams/eid/events", ev)[1], first)
        self.assertEqual(self.r.xlen("eid"), 3)
        st, body, _ = http_req(self.srv, "POST", "/streams/eid/events", dict(ev, id="x" * 300))
        self.assertEqual((st, body["code"]), (400, "bad_event"))
        st, body, _ = http_req(self.srv, "POST", "/streams/eid/events", dict(ev, id=7))
        self.assertEqual((st, body["code"]), (400, "bad_event"))

    def test_streams_delete_health_metrics(self):
        http_req(self.srv, "POST", "/streams/a%2Fb/events", {"type": "t"})
        st, body, _ = http_req(self.srv, "GET", "/streams")
        self.assertEqual([s["name"] for s in body["streams"]], ["a/b"])
        st, body, _ = http_req(self.srv, "GET", "/streams/a%2Fb")
        self.assertEqual((st, body["length"]), (200, 1))
        self.assertEqual(http_req(self.srv, "GET", "/healthz")[:2], (200, {"status": "ok"}))
        self.assertEqual(http_req(self.srv, "GET", "/readyz")[:2], (200, {"status": "ready"}))
        st, text, _ = http_req(self.srv, "GET", "/metrics")
        self.assertEqual(st, 200)
        self.assertIn(b"evstore_appends_total 1\n", text)
        self.assertIn(b'evstore_stream_length{stream="a/b"} 1\n', text)
        # histograms: cumulative buckets ending in +Inf == _count; the POST was fsynced (always)
        for name in ("fsync_seconds", "batch_records"):
            lines = [l for l in text.decode().splitlines() if l.startswith("evstore_%s_" % name)]
            buckets = [int(l.rsplit(" ", 1)[1]) for l in lines if "_bucket{" in l]
            count = int([l for l in lines if l.startswith("evstore_%s_count " % name)][0].split()[1])
            self.assertEqual(buckets, sorted(buckets), name)
            self.assertTrue(lines[-3].startswith('evstore_%s_bucket{le="+Inf"}' % name), lines)
            self.assertEqual(buckets[-1], count, name)
            self.assertGreaterEqual(count, 1, name)
            self.assertIn("# TYPE evstore_%s histogram" % name, text.decode())
        st, body, _ = http_req(self.srv, "DELETE", "/streams/a%2Fb")
        self.assertEqual((st, body), (200, {"deleted": True}))
        self.assertEqual(http_req(self.srv, "GET", "/streams/a%2Fb")[0], 404)


    def test_stream_list_in_pages(self):
        """GET /streams pages through the streams in creation order with limit and the
        previous page's next; a stream dropped and one made during the walk do not disturb
        the others, each met exactly once; bad parameters are 400s."""
        names = ["s%02d" % i for i in range(7)]
        for n in names:
            self.r.xadd(n, {"a": "b"})
        st, body, _ = http_req(self.srv, "GET", "/streams")
        self.assertEqual(([s["name"] for s in body["streams"]], body["next"]), (names, None))
        seen, cursor, pages = [], None, 0
        while True:
            q = "/streams?limit=3" + ("&cursor=" + cursor if cursor else "")
            st, body, _ = http_req(self.srv, "GET", q)
            self.assertEqual(st, 200, body)
            self.assertLessEqual(len(body["streams"]), 3)
            seen += [s["name"] for s in body["streams"]]
            pages += 1
            if pages == 1:  # mid-walk: one dropped (not yet met), one made
                self.r.delete("s05")
                self.r.xadd("late", {"a": "b"})
            cursor = body["next"]
            if cursor is None:
                break
        self.assertEqual([n for n in seen if n != "late"], [n for n in names if n != "s05"])
        self.assertLessEqual(seen.count("late"), 1)
        self.assertEqual(seen[3], "s03", seen)
        for q, code in (("limit=0", "bad_limit"), ("limit=10001", "bad_limit"), ("limit=x", "bad_limit"),
                        ("cursor=-1", "bad_cursor"), ("cursor=", "bad_cursor"), ("cursor=1x", "bad_cursor")):
            st, body, _ = http_req(self.srv, "GET", "/streams?" + q)
            self.assertEqual((st, body["code"]), (400, code), q)
        st, body, _ = http_req(self.srv, "GET", "/streams?cursor=999999")
        self.assertEqual((st, body), (200, {"streams": [], "next": None}))


class HttpListModel(Base):
    def test_random_list_queries_match_xrange(self):
        """GET /streams/{name}/events against the entries XRANGE returns: random bounds
        (exclusive, existing IDs or not), limits, order and source/type filters, each page
        and its `next`, and every filtered walk paged to its end, over entries published both
        ways, some deleted."""
        rnd = random.Random(11)
        for _ in range(40):
            batch = []
            for _ in range(rnd.randint(1, 12)):
                ev = {"payload": rnd.randint(0, 9)}
                if rnd.random() < 0.8:
                    ev["source"] = rnd.choice("abc")
                if rnd.random() < 0.8:
                    ev["type"] = rnd.choice("xy")
                batch.append(ev)
            st, body, _ = http_req(self.srv, "POST", "/streams/m/events", batch)
            self.assertEqual(st, 201, body)
            if rnd.random() < 0.3:  # RESP too, the fields in another order
                self.r.xadd("m", {"type": rnd.choice("xy"), "source": rnd.choice("abc"), "k": "v"})
        ids = [i for i, _ in self.r.xrange("m")]
        self.r.xdel("m", *rnd.sample(ids, 30))
        truth = [(i, f) for i, f in self.r.xrange("m")]
        every = [i for i, _ in truth]

        def key(i):
            return tuple(int(p) for p in i.split("-"))

        def expect(after, before, limit, reverse, src, typ):
            m = [i for i, f in truth
                 if (after is None or key(i) > key(after)) and (before is None or key(i) < key(before))
                 and (src is None or f.get("source") == src) and (typ is None or f.get("type") == typ)]
            if reverse:
                m.reverse()
            return m[:limit], (m[limit - 1] if len(m) > limit else None)

        def bound():
            if rnd.random() < 0.3:
                return None
            if rnd.random() < 0.7:
                return rnd.choice(every)
            ms, seq = key(rnd.choice(every))
            return "%d-%d" % (ms + rnd.choice([-1, 0, 1]), rnd.randint(0, 3))

        def get(after, before, limit, reverse, src, typ):
            q = {"limit": limit}
            for k, v in (("after", after), ("before", before), ("source", src), ("type", typ)):
                if v is not None:
                    q[k] = v
            if reverse:
                q["reverse"] = 1
            st, body, _ = http_req(self.srv, "GET", "/streams/m/events?" + urllib.parse.urlencode(q))
            self.assertEqual(st, 200, (q, body))
            return [e["id"] for e in body["events"]], body["next"], body["events"]

        for _ in range(300):
            args = (bound(), bound(), rnd.randint(1, 40), rnd.random() < 0.5,
                    rnd.choice([None, None, "a", "b", "c", "zz"]), rnd.choice([None, None, "x", "y"]))
            got, nxt, events = get(*args)
            self.assertEqual((got, nxt), expect(*args), args)
            for e in events:  # the fields are the entry's
                f = dict(truth)[e["id"]]
                self.assertEqual((e.get("source"), e.get("type")), (f.get("source"), f.get("type")))
        for src, typ, reverse in ((None, None, False), ("a", None, True), (None, "y", False), ("b", "x", True)):
            want, _ = expect(None, None, 10 ** 6, reverse, src, typ)
            got, cur = [], None
            while True:
                after, before = (None, cur) if reverse else (cur, None)
                page, cur, _ = get(after, before, 7, reverse, src, typ)
                got += page
                if cur is None:
                    break
            self.assertEqual(got, want, (src, typ, reverse))


class CliClients(Base):
    def cli(self, *args, stdin=None):
        return subprocess.run([EVSTORE, *args[:1], "--server", "127.0.0.1:%d" % self.srv.port, *args[1:]],
                              input=stdin, capture_output=True, text=True, timeout=20)

    def test_publish_and_read(self):
        p = self.cli("publish", "c", "k", "v")
        self.assertEqual(p.returncode, 0, p.stderr)
        first = p.stdout.strip()
        lines = '{"type":"a","payload":{"x":1}}\nnot json\n\n{"type":"b","source":"cli"}\n'
        p = self.cli("publish", "c", stdin=lines)
        self.assertEqual(p.returncode, 3)
        out = p.stdout.split("\n")
        self.assertEqual(out[1:3], ["", ""])  # the refused line and the blank one keep their places
        self.assertIn("line 2", p.stderr)
        self.assertNotIn("line 3", p.stderr)
        p = self.cli("read", "c")
        events = [json.loads(l) for l in p.stdout.splitlines()]
        self.assertEqual([e["id"] for e in events], [first, out[0], out[3]])
        self.assertEqual(events[1]["payload"], {"x": 1})
        self.assertEqual(events[0]["fields"], {"k": "v"})
        p = self.cli("read", "c", "--type", "b")
        self.assertEqual([json.loads(l)["source"] for l in p.stdout.splitlines()], ["cli"])
        p = self.cli("read", "c", "--after", first, "--limit", "1")
        self.assertEqual([json.loads(l)["id"] for l in p.stdout.splitlines()], [out[0]])

    def test_publish_cut_off_says_which_lines_are_settled(self):
        """The server killed while `publish` streams events: stdout holds the IDs of the lines
        answered, in order, and stderr says which were sent without an answer (appended or not)
        and that the rest was not sent. Every answered ID is in the stream, and nothing past
        the lines sent."""
        src = tempfile.TemporaryFile("w+")
        src.write("".join('{"type":"t","payload":%d}\n' % i for i in range(300000)))
        src.seek(0)
        proc = subprocess.Popen([EVSTORE, "publish", "--server", "127.0.0.1:%d" % self.srv.port, "k"],
                                stdin=src, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        src.close()
        deadline = time.time() + 10
        while not self.r.xlen("k") and time.time() < deadline:
            time.sleep(0.01)  # (read from stdout here, lines communicate() would not see)
        time.sleep(0.3)
        self.srv.stop(signal.SIGKILL)
        out, err = proc.communicate(timeout=20)
        self.assertEqual(proc.returncode, 3)
        m = re.search(r"lines 1-(\d+) are answered above(?:; lines (\d+)-(\d+) were sent but not "
                      r"answered[^;\n]*)?(; the lines after them were not sent)?", err)
        self.assertTrue(m, err)
        answered = int(m.group(1))
        ids = out.splitlines()
        self.assertEqual(len(ids), answered)
        sent = int(m.group(3) or answered)
        self.assertTrue(m.group(4), err)  # 300,000 lines do not all go in 0.3 s
        self.srv.start()
        self.r = self.srv.client(decode_responses=True)
        got = [e[0] for e in self.r.xrange("k")]
        self.assertGreaterEqual(len(got), answered)
        self.assertLessEqual(len(got), sent)
        self.assertEqual(got[:answered], ids)

    def test_read_follow(self):
        self.r.xadd("f", {"n": "1"})
        proc = subprocess.Popen([EVSTORE, "read", "--server", "127.0.0.1:%d" % self.srv.port, "f", "--follow"],
                                stdout=subprocess.PIPE, text=True)
        first = json.loads(proc.stdout.readline())
        self.assertEqual(first["fields"], {"n": "1"})
        self.r.xadd("f", {"n": "2"})
        second = json.loads(proc.stdout.readline())
        self.assertEqual(second["fields"], {"n": "2"})
        proc.send_signal(signal.SIGINT)
        self.assertEqual(proc.wait(timeout=10), 0)
        proc.stdout.close()

    def test_follow_goes_on_after_a_server_restart(self):
        """A server killed and started again on its port does not end `read --follow` or
        `tail`: they connect again and go on after the last entry they printed. An entry
        appended before they are back comes once, nothing comes twice."""
        self.r.xadd("rf", {"n": "1"})
        where = ("--server", "127.0.0.1:%d" % self.srv.port)
        procs = [subprocess.Popen([EVSTORE, "read", *where, "rf", "--follow"], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True),
                 subprocess.Popen([EVSTORE, "tail", *where, "-n", "1", "rf"], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)]
        for proc in procs:
            self.assertEqual(json.loads(proc.stdout.readline())["fields"], {"n": "1"})
        ports = (self.srv.port, self.srv.http_port)
        self.srv.stop(signal.SIGKILL)
        time.sleep(0.5)  # they notice, and try again meanwhile
        self.srv.start(ports=ports)
        self.r = self.srv.client(decode_responses=True)
        self.r.xadd("rf", {"n": "2"})  # most likely before they are back
        time.sleep(2.5)  # back by now (their pause is at most 2 s)
        self.r.xadd("rf", {"n": "3"})
        for proc in procs:
            got = [json.loads(proc.stdout.readline())["fields"]["n"] for _ in range(2)]
            self.assertEqual(got, ["2", "3"])
            proc.send_signal(signal.SIGINT)
            self.assertEqual(proc.wait(timeout=10), 0)
            err = proc.stderr.read()
            self.assertIn("reconnecting to 127.0.0.1:%d" % ports[0], err)
            self.assertIn("reconnected", err)
            proc.stdout.close()
            proc.stderr.close()

    def test_tail(self):
        """`evstore tail`: the last N entries (of a type), then each new one; -n 0: new ones
        only; a stream that does not exist yet is waited for."""
        pipe = self.r.pipeline(transaction=False)
        for i in range(1, 2502):  # more than one page of the backward walk
            pipe.xadd("t", {"type": "odd" if i % 2 else "even", "n": str(i)}, id="%d-1" % i)
        pipe.execute()
        procs = {}
        for name, args in (("last3", ("-n", "3", "t")), ("even2", ("--type", "even", "-n", "2", "t")),
                           ("new", ("-n", "0", "t")), ("rare", ("--type", "even", "-n", "1300", "t")),
                           ("later", ("later",))):
            procs[name] = subprocess.Popen(
                [EVSTORE, "tail", "--server", "127.0.0.1:%d" % self.srv.port, *args],
                stdout=subprocess.PIPE, text=True)
        def n_of(proc, k):
            return [json.loads(proc.stdout.readline())["fields"]["n"] for _ in range(k)]
        self.assertEqual(n_of(procs["last3"], 3), ["2499", "2500", "2501"])
        self.assertEqual(n_of(procs["even2"], 2), ["2498", "2500"])
        rare = n_of(procs["rare"], 1250)  # fewer of that type than asked: all of them
        self.assertEqual((rare[0], rare[-1], len(rare)), ("2", "2500", 1250))
        time.sleep(0.3)  # the tails are waiting now
        self.r.xadd("t", {"type": "even", "n": "new"}, id="3000-1")
        self.r.xadd("later", {"n": "first"})
        for name in ("last3", "even2", "new", "rare"):
            self.assertEqual(n_of(procs[name], 1), ["new"], name)
        self.assertEqual(n_of(procs["later"], 1), ["first"])
        for proc in procs.values():
            proc.send_signal(signal.SIGINT)
            self.assertEqual(proc.wait(timeout=10), 0)
            proc.stdout.close()


class ClientLimits(unittest.TestCase):
    """Limits on a client as a whole: its output, its input, how many, how idle."""

    def test_slow_reader_is_dropped_and_others_are_not_stalled(self):
        d = tempfile.mkdtemp(prefix="evs-server-")
        srv = Server(os.path.join(d, "data"), "--max-output-bytes", "256k").start()
        try:
            r = srv.client(decode_responses=True)
            p = r.pipeline(transaction=False)
            for i in range(200):
                p.xadd("big", {"v": "x" * 1000})
            p.execute()
            slow = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
            slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            req = b"XRANGE big - +\r\n" * 200  # ~40 MB of replies, never read
            try:
                slow.sendall(req)
            except OSError:
                pass
            # other clients are served meanwhile
            for _ in range(20):
                self.assertEqual(r.xlen("big"), 200)
            # and the slow one was disconnected by the server. (Reading until the end of the
            # stream is no test of it: the kernel still delivers the up to 4 MiB queued in the
            # closed socket's send buffer, at ~40 KB/s into a 4 KiB receive window: 104 s.)
            deadline = time.time() + 10
            while r.info("clients")["connected_clients"] > 1 and time.time() < deadline:
                time.sleep(0.05)
            self.assertEqual(r.info("clients")["connected_clients"], 1)
            with open(os.path.join(d, "server.log"), errors="replace") as f:
                self.assertIn("output buffer over 262144 bytes (a slow reader)", f.read())
            slow.close()
            self.assertEqual(r.xlen("big"), 200)
            r.close()
        finally:
            self.assertEqual(srv.stop(), 0)
            shutil.rmtree(d, ignore_errors=True)

    def test_one_reply_over_the_output_limit_is_an_error_not_a_disconnect(self):
        """A single command whose reply would pass --max-output-bytes (an XRANGE of large
        entries without COUNT) is answered with an error naming the limit, and the connection
        goes on; the same read in smaller pages works, and `evstore read` pages down by itself.
        XREAD, and group reads of new entries (RESP and HTTP), answer fewer than COUNT instead;
        an HTTP page ends before its entries pass the limit, and `next` leads on."""
        d = tempfile.mkdtemp(prefix="evs-server-")
        srv = Server(os.path.join(d, "data"), "--max-output-bytes", "1m").start()
        try:
            r = srv.client()
            for i in range(5):
                r.xadd("big", {"payload": bytes([65 + i]) * 400000})
            for call in (lambda: r.xrange("big"), lambda: r.xrevrange("big")):
                with self.assertRaises(redis.ResponseError) as e:
                    call()
                self.assertIn("reply over the server's max-output-bytes (1048576 bytes)",
                              str(e.exception))
                self.assertTrue(r.ping())  # the same connection, still in step
            # an EXEC whose reply would pass it: its commands ran, and the error says so
            p = r.pipeline(transaction=True)
            p.xadd("small", {"n": "1"})
            p.xrange("big")
            with self.assertRaises(redis.ResponseError) as e:
                p.execute()
            self.assertIn("not sent: the command ran", str(e.exception))
            self.assertEqual(r.xlen("small"), 1)
            self.assertTrue(r.ping())
            got = r.xrange("big", count=2)
            self.assertEqual([len(f[b"payload"]) for _, f in got], [400000, 400000])
            # XREAD may answer fewer than COUNT: what fits in half the limit (one entry here)
            got, after = [], "0"
            while True:
                res = r.xread({"big": after})  # no COUNT
                if not res:
                    break
                self.assertEqual(len(res[0][1]), 1)
                got += [f[b"payload"][:1] for _, f in res[0][1]]
                after = res[0][1][-1][0]
            self.assertEqual(got, [b"A", b"B", b"C", b"D", b"E"])
            self.assertEqual(r.xlen("big"), 5)
            p = subprocess.run([EVSTORE, "read", "--server", "127.0.0.1:%d" % srv.port, "big"],
                               capture_output=True, text=True, timeout=60)
            self.assertEqual(p.returncode, 0, p.stderr)
            lines = p.stdout.splitlines()
            self.assertEqual(len(lines), 5)
            self.assertEqual([json.loads(x)["payload"][0] for x in lines],
                             list("ABCDE"))
            # HTTP pages end before their entries pass the limit, with `next` to go on
            seen, after, pages = [], None, 0
            while True:
                path = "/streams/big/events?limit=100" + ("&after=" + after if after else "")
                st, doc, _ = http_req(srv, "GET", path)
                self.assertEqual(st, 200)
                self.assertLessEqual(len(doc["events"]), 2)
                seen += [ev["payload"][0] for ev in doc["events"]]
                pages += 1
                after = doc["next"]
                if after is None:
                    break
            self.assertEqual(seen, list("ABCDE"))
            self.assertEqual(pages, 3)
            # a group read of new entries delivers fewer than COUNT instead of a reply that
            # could not be sent: nothing is left pending that was not returned
            r.xgroup_create("big", "g", id="0")
            got = []
            for _ in range(5):
                res = r.xreadgroup("g", "c", {"big": ">"})  # no COUNT
                self.assertEqual(len(res[0][1]), 1)  # 400 KB each, half of 1 MiB per reply
                got += [f[b"payload"][:1] for _, f in res[0][1]]
            self.assertEqual(got, [b"A", b"B", b"C", b"D", b"E"])
            self.assertEqual(r.xpending("big", "g")["pending"], 5)
            self.assertEqual(r.xreadgroup("g", "c", {"big": ">"}), [])
            # so does a read of the pending list (it counts a delivery of each entry it
            # returns, and of none it does not), and XAUTOCLAIM, whose cursor leads on
            got, after = [], "0"
            while True:
                res = r.xreadgroup("g", "c", {"big": after})
                if not res[0][1]:
                    break
                self.assertEqual(len(res[0][1]), 1)
                got += [f[b"payload"][:1] for _, f in res[0][1]]
                after = res[0][1][-1][0]
            self.assertEqual(got, [b"A", b"B", b"C", b"D", b"E"])
            pend = r.xpending_range("big", "g", "-", "+", 10)
            self.assertEqual([p["times_delivered"] for p in pend], [2] * 5)
            got, cursor = [], "0-0"
            while True:
                res = r.xautoclaim("big", "g", "d", 0, start_id=cursor)
                self.assertLessEqual(len(res[1]), 1)
                got += [f[b"payload"][:1] for _, f in res[1]]
                cursor = res[0]
                if cursor == b"0-0":
                    break
            self.assertEqual(got, [b"A", b"B", b"C", b"D", b"E"])
            pend = r.xpending_range("big", "g", "-", "+", 10)
            self.assertEqual([(p["consumer"], p["times_delivered"]) for p in pend],
                             [(b"d", 3)] * 5)
            # XCLAIM names its IDs: a reply that cannot fit is refused before any claim
            ids = [p["message_id"] for p in pend]
            with self.assertRaises(redis.ResponseError) as e:
                r.xclaim("big", "g", "e", 0, ids)
            self.assertIn("claim fewer IDs, or with JUSTID", str(e.exception))
            pend = r.xpending_range("big", "g", "-", "+", 10)
            self.assertEqual([(p["consumer"], p["times_delivered"]) for p in pend],
                             [(b"d", 3)] * 5)
            self.assertEqual(r.xclaim("big", "g", "e", 0, ids, justid=True), ids)
            self.assertEqual(len(r.xclaim("big", "g", "f", 0, ids[:1])), 1)
            r.xgroup_create("big", "h", id="0")
            seen = []
            while True:
                st, doc, _ = http_req(srv, "POST", "/streams/big/groups/h/read",
                                      {"consumer": "c", "count": 100})
                self.assertEqual(st, 200)
                if not doc["events"]:
                    break
                self.assertLessEqual(len(doc["events"]), 2)
                seen += [ev["payload"][0] for ev in doc["events"]]
            self.assertEqual(seen, list("ABCDE"))
            self.assertEqual(r.xpending("big", "h")["pending"], 5)
            with open(os.path.join(d, "server.log"), errors="replace") as f:
                self.assertIn("a reply over 1048576 bytes (--max-output-bytes) answered with "
                              "an error", f.read())
            r.close()
        finally:
            self.assertEqual(srv.stop(), 0)
            shutil.rmtree(d, ignore_errors=True)

    def test_input_piling_up_behind_a_blocked_read_is_bounded(self):
        """A client parked in XREAD BLOCK that keeps sending: what waits behind the blocked
        command is bounded by --max-request-bytes, then the client is disconnected (as Redis'
        client-query-buffer-limit); the others are served, nothing they wrote is lost."""
        d = tempfile.mkdtemp(prefix="evs-server-")
        srv = Server(os.path.join(d, "data"), "--max-request-bytes", "1m").start()
        try:
            r = srv.client(decode_responses=True)
            r.xadd("s", {"a": "1"})
            flood = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
            flood.sendall(b"XREAD BLOCK 0 STREAMS s $\r\n")
            time.sleep(0.2)
            sent, closed = 0, False
            try:
                while sent < 64 * 1024 * 1024:
                    flood.sendall(b"PING\r\n" * 8192)
                    sent += 6 * 8192
            except OSError:
                closed = True
            if not closed:  # the kernel took it all: the close shows on reading
                try:
                    closed = flood.recv(1024) == b""
                except OSError:
                    closed = True
            flood.close()
            self.assertTrue(closed)
            self.assertLess(sent, 16 * 1024 * 1024)
            self.assertEqual(r.xlen("s"), 1)
            r.xadd("s", {"a": "2"})
            self.assertEqual(r.xlen("s"), 2)
            def log():
                with open(os.path.join(d, "server.log"), errors="replace") as f:
                    return f.read()
            deadline = time.time() + 5
            while "waiting behind a command" not in log() and time.time() < deadline:
                time.sleep(0.05)
            self.assertIn("over 1048576 bytes of input waiting behind a command", log())
            r.close()
        finally:
            self.assertEqual(srv.stop(), 0)
            shutil.rmtree(d, ignore_errors=True)

    def test_max_clients(self):
        d = tempfile.mkdtemp(prefix="evs-server-")
        srv = Server(os.path.join(d, "data"), "--max-clients", "2").start()
        try:
            # one at a time: a connection counts from its accept to the moment its close is read
            a = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
            a.sendall(b"PING\r\n")
            self.assertEqual(a.recv(100), b"+PONG\r\n")
            b = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
            b.sendall(b"PING\r\n")
            self.assertEqual(b.recv(100), b"+PONG\r\n")
            self.assertEqual(raw(srv.port, b"PING\r\n", read_until_close=True),
                             b"-ERR max number of clients reached\r\n")
            a.close()
            b.close()
        finally:
            self.assertEqual(srv.stop(), 0)
            shutil.rmtree(d, ignore_errors=True)

    def test_max_clients_counts_http_connections(self):
        """RESP and HTTP share --max-clients (net/http_clients.c H1-H3): an HTTP connection
        counts from its first request until it closes, a live tail's included; past the limit
        a RESP client gets Redis' error and an HTTP request 503 "max_clients"."""
        d = tempfile.mkdtemp(prefix="evs-server-")
        srv = Server(os.path.join(d, "data"), "--max-clients", "3", "--max-tails", "1").start()
        conns = []
        try:
            def info_clients(r):
                return {k: v for k, v in r.info("clients").items()
                        if k in ("connected_clients", "http_clients")}
            kept = http.client.HTTPConnection("127.0.0.1", srv.http_port, timeout=10)
            conns.append(kept)
            for _ in range(3):  # one connection, counted once
                kept.request("GET", "/healthz")
                self.assertEqual(json.loads(kept.getresponse().read()), {"status": "ok"})

            def open_tail():
                t = socket.create_connection(("127.0.0.1", srv.http_port), timeout=10)
                conns.append(t)
                t.sendall(b"GET /streams/s/events/live HTTP/1.1\r\nHost: localhost\r\n\r\n")
                self.assertIn(b"text/event-stream", t.recv(4096))
                return t
            tail = open_tail()
            r = srv.client(decode_responses=True)
            self.assertEqual(info_clients(r), {"connected_clients": 1, "http_clients": 2})
            self.assertEqual(raw(srv.port, b"PING\r\n", read_until_close=True),
                             b"-ERR max number of clients reached\r\n")
            status, body, resp = http_req(srv, "GET", "/healthz")
            self.assertEqual((status, body["code"]), (503, "max_clients"))
            self.assertIn("--max-clients 3", body["error"])
            self.assertEqual(resp.getheader("Connection"), "close")
            # closing them uncounts them; the tail's own close ran too (--max-tails 1 admits
            # a new one)
            kept.close()
            tail.close()
            self.assertTrue(eventually(lambda: info_clients(r)["http_clients"] == 0))
            self.assertEqual(http_req(srv, "GET", "/healthz")[0], 200)
            open_tail()
            self.assertEqual(raw(srv.port, b"PING\r\n"), b"+PONG\r\n")
            r.close()
        finally:
            for c in conns:
                c.close()
            self.assertEqual(srv.stop(), 0)
            shutil.rmtree(d, ignore_errors=True)

    def test_http_clients_counted_through_churn(self):
        """Hundreds of HTTP connections opened and closed in a random order (the table of
        counted connections grows and takes entries out of the middle of its runs): the count
        is the connections open, every step of the way, and 0 at the end."""
        d = tempfile.mkdtemp(prefix="evs-server-")
        srv = Server(os.path.join(d, "data"), "--max-clients", "1000").start()
        rnd = random.Random(7)
        open_ = []
        try:
            r = srv.client(decode_responses=True)

            def counted():
                return r.info("clients")["http_clients"]

            def connect():
                s = socket.create_connection(("127.0.0.1", srv.http_port), timeout=10)
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
                self.assertIn(b"200 OK", s.recv(4096))
                open_.append(s)
            for _ in range(300):
                connect()
            self.assertEqual(counted(), 300)
            for step in range(6):
                rnd.shuffle(open_)
                for s in open_[:100]:
                    s.close()
                del open_[:100]
                for _ in range(rnd.randrange(0, 60)):
                    connect()
                self.assertTrue(eventually(lambda: counted() == len(open_)),
                                "step %d: %d counted, %d open" % (step, counted(), len(open_)))
            for s in open_:
                s.close()
            open_ = []
            self.assertTrue(eventually(lambda: counted() == 0))
            r.close()
        finally:
            for s in open_:
                s.close()
            self.assertEqual(srv.stop(), 0)
            shutil.rmtree(d, ignore_errors=True)

    def test_idle_timeout_spares_blocked_and_busy_clients(self):
        d = tempfile.mkdtemp(prefix="evs-server-")
        srv = Server(os.path.join(d, "data"), "--timeout", "1").start()
        try:
            def conn():
                s = socket.create_connection(("127.0.0.1", srv.port), timeout=8)
                s.sendall(b"PING\r\n")
                self.assertEqual(s.recv(100), b"+PONG\r\n")
                return s
            idle, blocked, busy = conn(), conn(), conn()
            blocked.sendall(b"XREAD BLOCK 3500 STREAMS nothing $\r\n")
            t0 = time.time()
            while time.time() - t0 < 3:
                busy.sendall(b"PING\r\n")
                self.assertEqual(busy.recv(100), b"+PONG\r\n")
                time.sleep(0.3)
            self.assertEqual(idle.recv(100), b"")  # closed by the server
            self.assertEqual(blocked.recv(100), b"*-1\r\n")  # its BLOCK ran out, not the timeout
            # CONFIG SET timeout 0: nobody is closed any more
            c = srv.client(decode_responses=True)
            self.assertEqual(c.config_get("timeout"), {"timeout": "1"})
            self.assertTrue(c.config_set("timeout", 0))
            quiet = conn()
            time.sleep(2.5)
            quiet.sendall(b"PING\r\n")
            self.assertEqual(quiet.recv(100), b"+PONG\r\n")
            for s in (idle, blocked, busy, quiet):
                s.close()
            c.close()
        finally:
            self.assertEqual(srv.stop(), 0)
            shutil.rmtree(d, ignore_errors=True)


class Limits(Base):
    """Each limit answers the one request or connection that crosses it, clearly, and leaves
    everyone else alone."""
    FLAGS = ("--max-tails", "2", "--max-entry-bytes", "4k", "--max-request-bytes", "64k",
             "--metrics-max-streams", "2")

    def tail(self):
        s = socket.create_connection(("127.0.0.1", self.srv.http_port), timeout=5)
        s.sendall(b"GET /streams/t/events/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(4096)
        return s, head

    def test_limits_refuse_clearly_and_spare_the_others(self):
        other = self.srv.client(decode_responses=True)
        other.xadd("ok", {"a": "b"})
        # an entry over --max-entry-bytes: RESP -ERR, HTTP 413 too_big; nothing appended
        # (the error says the size and the limit)
        with self.assertRaisesRegex(redis.ResponseError, r"^entry is \d+ bytes encoded, the limit is 4096$"):
            self.r.xadd("big", {"v": "x" * 5000})
        st, body, _ = http_req(self.srv, "POST", "/streams/big/events", {"type": "t", "payload": "x" * 5000})
        self.assertEqual((st, body["code"]), (413, "too_big"), body)
        self.assertRegex(body["error"], r"^entry is \d+ bytes encoded, the limit is 4096$")
        self.assertEqual(self.r.exists("big"), 0)
        # a stream name over 400 bytes: the same, in a MULTI too
        with self.assertRaisesRegex(redis.ResponseError, "^stream name is 401 bytes, the limit is 400$"):
            self.r.xadd("n" * 401, {"v": "x"})
        p = self.r.pipeline(transaction=True)
        p.xadd("n" * 401, {"v": "x"})
        self.assertRegex(str(p.execute(raise_on_error=False)[0]), "^stream name is 401 bytes")
        st, body, _ = http_req(self.srv, "POST", "/streams/%s/events" % ("n" * 401), {"type": "t"})
        self.assertEqual((st, body["code"]), (413, "too_big"), body)
        self.assertEqual(body["error"], "stream name is 401 bytes, the limit is 400")
        # a bulk argument over --max-request-bytes: a protocol error for that connection only
        out = raw(self.srv.port, b"*3\r\n$4\r\nXLEN\r\n$100000\r\n", read_until_close=True)
        self.assertEqual(out, b"-ERR Protocol error: invalid bulk length\r\n")
        # an HTTP body over it: refused by libevent (413), headers over 64 KiB: refused too
        st, _, _ = http_req(self.srv, "POST", "/streams/big/events", b"[" + b" " * 70000 + b"]")
        self.assertEqual(st, 413)
        c = http.client.HTTPConnection("127.0.0.1", self.srv.http_port, timeout=10)
        c.request("GET", "/streams", headers={"X-Pad": "p" * 70000})
        self.assertEqual(c.getresponse().status, 400)  # libevent's own page
        c.close()
        # --max-tails: the third live tail is refused; the two keep receiving
        t1, h1 = self.tail()
        t2, h2 = self.tail()
        self.assertIn(b" 200 ", h1.split(b"\r\n")[0])
        t3, h3 = self.tail()
        self.assertIn(b" 503 ", h3.split(b"\r\n")[0])
        t3.close()
        self.r.xadd("t", {"type": "seen"})
        for t in (t1, t2):
            got = b""
            while b"seen" not in got:
                got += t.recv(4096)
        t1.close()
        deadline = time.time() + 5  # the server notices the close, then a new tail fits
        while True:
            t4, h4 = self.tail()
            if b" 200 " in h4.split(b"\r\n")[0] or time.time() > deadline:
                break
            t4.close()
            time.sleep(0.1)
        self.assertIn(b" 200 ", h4.split(b"\r\n")[0])
        t2.close()
        t4.close()
        # and the other client never noticed any of it
        self.assertEqual(other.xrange("ok")[0][1], {"a": "b"})
        other.close()


    def test_metrics_series_for_the_first_streams_only(self):
        """--metrics-max-streams 2: per-stream series (length, groups) for the first two
        streams made, and a gauge counting the rest, so a store of many streams does not flood
        the scraper nor hold the event loop for a walk of them all."""
        for name in ("m1", "m2", "m3"):
            self.r.xadd(name, {"a": "b"})
            self.r.xgroup_create(name, "g", "0")
        self.r.xreadgroup("g", "c", {"m1": ">", "m3": ">"})
        st, text, _ = http_req(self.srv, "GET", "/metrics")
        lines = text.decode().splitlines()
        self.assertEqual([l for l in lines if l.startswith("evstore_stream_length{")],
                         ['evstore_stream_length{stream="m1"} 1', 'evstore_stream_length{stream="m2"} 1'])
        self.assertEqual([l for l in lines if l.startswith("evstore_group_pending{")],
                         ['evstore_group_pending{stream="m1",group="g"} 1',
                          'evstore_group_pending{stream="m2",group="g"} 0'])
        self.assertIn("evstore_stream_series_omitted 1", lines)
        self.assertIn("evstore_streams 3", lines)
        self.r.delete("m1")
        st, text, _ = http_req(self.srv, "GET", "/metrics")
        lines = text.decode().splitlines()
        self.assertEqual([l for l in lines if l.startswith("evstore_stream_length{")],
                         ['evstore_stream_length{stream="m2"} 1', 'evstore_stream_length{stream="m3"} 1'])
        self.assertIn("evstore_stream_series_omitted 0", lines)
        # m1's memory goes once nothing holds it (storage/streams.c S3): the writer frees it
        # between requests after the index commit that deletes its keys
        def held():
            self.r.xadd("tick", {"t": "1"})
            text = http_req(self.srv, "GET", "/metrics")[1].decode()
            return [l for l in text.splitlines() if l.startswith("evstore_streams_dropped_held ")]
        eventually(lambda: held() == ["evstore_streams_dropped_held 0"])
        self.assertEqual(held(), ["evstore_streams_dropped_held 0"])


class DamagedIndex(unittest.TestCase):
    """The LMDB index deleted or damaged while the server is stopped: the next start rebuilds
    it from the log and serves the same entries and consumer groups."""

    def test_index_deleted_or_damaged_is_rebuilt(self):
        d = tempfile.mkdtemp(prefix="evs-index-")
        data = os.path.join(d, "data")
        srv = Server(data)
        try:
            srv.start()
            r = srv.client(decode_responses=True)
            for i in range(3000):
                r.xadd("s%d" % (i % 3), {"source": "src%d" % (i % 5), "type": "t", "n": str(i),
                                         "p": "x" * 3000})
            r.xgroup_create("s0", "g", id="0")
            r.xreadgroup("g", "c", {"s0": ">"}, count=7)
            r.xack("s0", "g", r.xpending_range("s0", "g", "-", "+", 1)[0]["message_id"])
            before = {k: r.xrange(k) for k in ("s0", "s1", "s2")}
            groups = r.xinfo_groups("s0")
            pending = r.xpending("s0", "g")
            r.close()
            self.assertEqual(srv.stop(), 0)
            index = os.path.join(data, "index")
            for damage in ("delete", "garbage"):
                if damage == "delete":
                    shutil.rmtree(index)
                else:
                    with open(os.path.join(index, "data.mdb"), "r+b") as f:
                        f.write(b"\x5a" * 16384)
                srv.start()
                r = srv.client(decode_responses=True)
                self.assertEqual({k: r.xrange(k) for k in before}, before, damage)
                self.assertEqual(r.xinfo_groups("s0"), groups, damage)
                self.assertEqual(r.xpending("s0", "g"), pending, damage)
                st, body, _ = http_req(srv, "GET", "/streams/s1/events?source=src1&limit=1000")
                self.assertEqual(st, 200)
                self.assertEqual(len(body["events"]),
                                 sum(1 for _, f in before["s1"] if f["source"] == "src1"))
                r.close()
                self.assertEqual(srv.stop(), 0)
            with open(os.path.join(d, "server.log"), errors="replace") as f:
                log = f.read()
            self.assertIn("rebuilding from the log", log)
        finally:
            if srv.proc and srv.proc.poll() is None:
                srv.stop(signal.SIGKILL)
            shutil.rmtree(d, ignore_errors=True)


def mount_tmpfs(test, size):
    """A new folder and, in it, a tmpfs of `size` ("12m") mounted at folder/fs: (folder, mount
    point). The test is skipped where this process may not mount. The caller unmounts."""
    d = tempfile.mkdtemp(prefix="evs-fs-")
    mnt = os.path.join(d, "fs")
    os.mkdir(mnt)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=" + size, "tmpfs", mnt]).returncode:
        shutil.rmtree(d)
        test.skipTest("cannot mount a tmpfs here (needs root)")
    return d, mnt


def mount_ext2(test, size_mb):
    """As mount_tmpfs, an ext2 file system of size_mb MiB in an image file (a loop mount): a
    file system without fallocate. Skipped where this process may not make or mount one."""
    d = tempfile.mkdtemp(prefix="evs-fs-")
    mnt, img = os.path.join(d, "fs"), os.path.join(d, "ext2.img")
    os.mkdir(mnt)
    with open(img, "wb") as f:
        f.truncate(size_mb << 20)
    if (subprocess.run(["mkfs.ext2", "-q", "-F", img], capture_output=True).returncode or
            subprocess.run(["mount", "-o", "loop", img, mnt], capture_output=True).returncode):
        shutil.rmtree(d)
        test.skipTest("cannot make or mount an ext2 image here (needs root, loop devices)")
    return d, mnt


def unmount(srv, d, mnt):
    """The end of a test on its own mount: its server stopped (killed where a failed assertion
    left it running: the mount is busy while the server and its log are open), the file system
    unmounted, the folder removed."""
    if srv and srv.proc and srv.proc.poll() is None:
        srv.stop(signal.SIGKILL)
    subprocess.run(["umount", mnt])
    shutil.rmtree(d, ignore_errors=True)


def mount_log(mnt):
    """The log of the servers a test ran on its own mount (Server writes it beside the data)."""
    with open(os.path.join(mnt, "server.log"), errors="replace") as f:
        return f.read()


def entries_after_restart(test, srv, stream):
    """Start srv again, read the stream whole, stop it (cleanly): its entries."""
    srv.start()
    r = srv.client(decode_responses=True)
    got = r.xrange(stream)
    r.close()
    test.assertEqual(srv.stop(), 0)
    return got


def fill_until_refused(test, r, stream, payload):
    """Publish {n, p: payload} to stream until a publish is refused: the acknowledged IDs and
    the refusal's text. The test fails if the disk never fills."""
    acked = []
    for i in range(20000):
        try:
            acked.append(r.xadd(stream, {"n": str(i), "p": payload}))
        except redis.ResponseError as e:
            return acked, str(e)
    test.fail("the disk never filled")


class DiskFull(unittest.TestCase):
    def test_a_file_system_without_fallocate_fills_without_failing(self):
        """ext2 has no fallocate: segments and the space reserve must get their blocks by
        writes (fileio.c r_fallocate), else the files are sparse, the disk fills inside the
        writer's pwritev and the store fails until a restart (seen: "writes refused until
        restart"). Filled, it refuses publishes clearly and stays writable; a trim frees the
        disk and publishing resumes; nothing acknowledged is lost. (Mutation-checked: with
        preallocation advisory there again, this fails.)"""
        d, mnt = mount_ext2(self, 24)
        srv = None
        try:
            data = os.path.join(mnt, "data")
            srv = Server(data).start()  # 1 MiB segments
            r = srv.client(decode_responses=True)
            # the active segment and the reserve hold their blocks (not sparse files): the
            # check that sees the fallback itself, since the index's headroom, judged by the
            # free space here, now also stops writes before a sparse segment would meet ENOSPC
            logdir = os.path.join(data, "log")
            for name in ("00000000000000000000.seg", "reserve.seg.tmp"):
                st = os.stat(os.path.join(logdir, name))
                self.assertEqual(st.st_size, 1 << 20, name)
                self.assertGreaterEqual(st.st_blocks * 512, st.st_size, name)
            payload = "x" * 4000
            acked, err = fill_until_refused(self, r, "s", payload)
            self.assertIn("nothing was written", err)
            self.assertEqual(http_req(srv, "GET", "/readyz")[0], 200)  # full, not failed
            self.assertEqual(r.xtrim("s", maxlen=100), len(acked) - 100)
            deadline = time.time() + 20
            while time.time() < deadline:
                try:
                    acked.append(r.xadd("s", {"n": "after", "p": payload}))
                    break
                except redis.ResponseError:  # until retention's next pass frees segments
                    time.sleep(0.2)
            for i in range(600):  # past several rolls
                acked.append(r.xadd("s", {"n": "after-%d" % i, "p": payload}))
            want = acked[-701:]
            self.assertEqual([e[0] for e in r.xrange("s")], want)
            r.close()
            self.assertEqual(srv.stop(), 0)
            self.assertNotIn("writes refused until restart", mount_log(mnt))
            self.assertEqual([e[0] for e in entries_after_restart(self, srv, "s")], want)
        finally:
            unmount(srv, d, mnt)

    def test_an_index_of_many_distinct_sources_fills_the_disk_without_failing(self):
        """An index that grows faster than the log (every entry a new `source` and `type`:
        about 500 bytes of index an entry) fills the disk itself. Publishes must be refused
        while the index still has room for what the log holds beyond it (index.c
        idx_keep_headroom: twice the recent peak of one commit's growth; a fixed 1 MiB let
        the next commit meet the full disk and fail the store, "index update failed"), on a
        tmpfs (blocks kept past the data file) and on ext2 (no FALLOC_FL_KEEP_SIZE: its free
        space counts). Then a trim frees space, publishing resumes, nothing acknowledged is
        lost. (The entries carry 150 bytes besides, so that the log spans segments a trim can
        free: an index alone that fills a disk keeps it full, its file never shrinks, as
        architecture.md says. Mutation-checked: with the fixed 1 MiB, or ext2's free space
        not counted, this fails.)"""
        for kind in ("tmpfs", "ext2"):
            with self.subTest(kind):
                d, mnt = mount_tmpfs(self, "12m") if kind == "tmpfs" else mount_ext2(self, 12)
                srv = None
                try:
                    srv = Server(os.path.join(mnt, "data")).start()  # 1 MiB segments
                    r = srv.client(decode_responses=True)
                    acked, err, n = 0, None, 0
                    while err is None and n < 200000:
                        p = r.pipeline(transaction=False)
                        for i in range(n, n + 200):
                            p.xadd("s", {"source": "src-%d-%d" % (i, i * 7919),
                                         "type": "t%d" % (i % 9973), "p": "x" * 150})
                        n += 200
                        for res in p.execute(raise_on_error=False):
                            if isinstance(res, Exception):
                                err = err or str(res)
                            else:
                                acked += 1
                    self.assertIsNotNone(err, "the disk never filled")
                    self.assertIn("nothing was written", err)
                    self.assertEqual(http_req(srv, "GET", "/readyz")[0], 200)  # not failed
                    self.assertEqual(r.xlen("s"), acked)
                    self.assertEqual(r.xtrim("s", maxlen=100), acked - 100)
                    deadline, ok = time.time() + 20, False
                    while not ok and time.time() < deadline:
                        try:
                            r.xadd("s", {"source": "after", "p": "x"})
                            ok = True
                        except redis.ResponseError:  # until retention's pass frees segments
                            time.sleep(0.2)
                    self.assertTrue(ok, "writes never resumed")
                    want = r.xrange("s")
                    self.assertEqual(len(want), 101)
                    r.close()
                    self.assertEqual(srv.stop(), 0)
                    log = mount_log(mnt)
                    self.assertNotIn("writes refused until restart", log, log[-2000:])
                    self.assertEqual(entries_after_restart(self, srv, "s"), want)
                finally:
                    unmount(srv, d, mnt)

    def test_full_disk_refuses_clearly_resumes_and_loses_nothing(self):
        d, mnt = mount_tmpfs(self, "12m")
        srv = None
        try:
            data = os.path.join(mnt, "data")
            srv = Server(data).start()
            r = srv.client(decode_responses=True)
            payload = "x" * 4000
            acked, err = fill_until_refused(self, r, "full", payload)
            # segments are preallocated: the disk fills when the next one is reserved, before
            # anything is written, so the store refuses that publish and stays writable
            self.assertIn("No space left on device", err)
            self.assertIn("nothing was written", err)
            with self.assertRaisesRegex(redis.ResponseError, "No space left"):
                r.xadd("full", {"n": "again", "p": payload})
            self.assertEqual([e[0] for e in r.xrange("full")], acked)
            st, body, _ = http_req(srv, "POST", "/streams/full/events", {"type": "t", "payload": payload})
            self.assertEqual((st, body["code"]), (503, "no_space"), body)
            self.assertIn("No space left on device", body["error"])
            self.assertEqual(http_req(srv, "GET", "/readyz")[0], 200)  # not failed: just full
            # space returns: publishing resumes at once, no restart
            subprocess.run(["mount", "-o", "remount,size=64m", mnt], check=True)
            for i in range(300):  # past at least one more segment roll
                acked.append(r.xadd("full", {"n": "after-%d" % i, "p": payload}))
            self.assertEqual([e[0] for e in r.xrange("full")], acked)
            r.close()
            self.assertEqual(srv.stop(), 0)
            log = mount_log(mnt)
            self.assertEqual(log.count("refusing writes for want of space"), 1, log[-3000:])
            self.assertIn("writes accepted again", log)
            # and after a restart nothing acknowledged is missing
            self.assertEqual([e[0] for e in entries_after_restart(self, srv, "full")], acked)
        finally:
            unmount(srv, d, mnt)


    def test_a_trim_frees_a_full_disk_and_an_open_recovers_on_one(self):
        """The space reserve (preparer.c P2, P3): freeing space writes first (retention
        re-declares the stream before it deletes the segment holding its create record), so
        on a full disk a trim must still free segments, and no request may fail the store by
        writing past its segment's blocks (writer.c W11)."""
        d, mnt = mount_tmpfs(self, "12m")
        srv = None
        try:
            data = os.path.join(mnt, "data")
            logdir = os.path.join(data, "log")
            srv = Server(data).start()  # 1 MiB segments
            r = srv.client(decode_responses=True)
            self.assertIn("reserve.seg.tmp", os.listdir(logdir))
            payload = "x" * 4000
            acked, err = fill_until_refused(self, r, "s", payload)
            self.assertIn("nothing was written", err)
            # requests other than appends at a full segment are refused too, never written
            # past the file's blocks (before W11 the ones here failed the store for good)
            last_ms = int(acked[-1].split("-")[0])
            refused = 0
            for i in range(1, 3001):
                try:
                    r.execute_command("XSETID", "s", "%d-0" % (last_ms + i))
                except redis.ResponseError as e:
                    self.assertIn("nothing was written", str(e))
                    refused += 1
            self.assertGreater(refused, 0)
            self.assertEqual(http_req(srv, "GET", "/readyz")[0], 200)  # full, not failed
            segs = [f for f in os.listdir(logdir) if f.endswith(".seg")]
            self.assertGreaterEqual(len(segs), 8)
            # a trim rolls into the reserve if it must, and retention deletes the old segments:
            # before the reserve, it failed every second (no room for its declare record)
            self.assertEqual(r.xtrim("s", maxlen=10), len(acked) - 10)
            deadline = time.time() + 10
            while time.time() < deadline and \
                    len([f for f in os.listdir(logdir) if f.endswith(".seg")]) > 3:
                time.sleep(0.1)
            self.assertLessEqual(len([f for f in os.listdir(logdir) if f.endswith(".seg")]), 3)
            for i in range(300):  # appends resume, past more rolls, and make the reserve again
                acked.append(r.xadd("s", {"n": "after-%d" % i, "p": payload}))
            kept = acked[-310:]
            self.assertEqual([e[0] for e in r.xrange("s")], kept)
            self.assertIn("reserve.seg.tmp", os.listdir(logdir))
            deadline = time.time() + 10  # the releaser frees deleted segments' space, paced
            while time.time() < deadline and \
                    [f for f in os.listdir(logdir) if f.endswith(".deleted")]:
                time.sleep(0.1)
            r.close()
            self.assertEqual(srv.stop(), 0)
            log = mount_log(mnt)
            self.assertIn("the space reserve becomes the next segment", log)
            self.assertNotIn("writes refused until restart", log)
            # a torn tail at the end of the active segment, and a disk filled by someone else:
            # the open keeps the cut bytes in a .torn file, using the reserve's space
            active = os.path.join(logdir, max(f for f in os.listdir(logdir) if f.endswith(".seg")))
            with open(active, "r+b") as f:
                buf = f.read()
                end = 0
                while end + 56 <= len(buf) and buf[end:end + 4] == b"EVR1":
                    end += (56 + int.from_bytes(buf[end + 8:end + 12], "little") + 7) // 8 * 8
                f.seek(end)
                f.write(b"\x01" * 40)
            if os.path.exists(os.path.join(logdir, "spare.seg.tmp")):  # the open deletes it:
                os.unlink(os.path.join(logdir, "spare.seg.tmp"))  # fill its space too
            subprocess.run(["dd", "if=/dev/zero", "of=" + os.path.join(mnt, "filler"), "bs=4k"],
                           stderr=subprocess.DEVNULL)
            srv.start()
            r = srv.client(decode_responses=True)
            self.assertEqual([e[0] for e in r.xrange("s")], kept)
            with self.assertRaisesRegex(redis.ResponseError, "no space for the space reserve"):
                r.xadd("s", {"n": "full", "p": payload})
            os.unlink(os.path.join(mnt, "filler"))
            kept.append(r.xadd("s", {"n": "room", "p": payload}))
            self.assertEqual([e[0] for e in r.xrange("s")], kept)
            r.close()
            self.assertEqual(srv.stop(), 0)
            log = mount_log(mnt)
            self.assertIn("released the space reserve", log)
            self.assertIn("torn tail: cut 40 bytes", log)
            self.assertTrue([f for f in os.listdir(logdir) if f.endswith(".torn")])
        finally:
            unmount(srv, d, mnt)


class Auth(unittest.TestCase):
    def test_requirepass(self):
        d = tempfile.mkdtemp(prefix="evs-server-")
        srv = Server(os.path.join(d, "data"), "--requirepass", "s3cret").start()
        try:
            self.assertEqual(raw(srv.port, b"XLEN s\r\n"), b"-NOAUTH Authentication required.\r\n")
            self.assertEqual(raw(srv.port, b"AUTH wrong\r\n"),
                             b"-WRONGPASS invalid username-password pair or user is disabled.\r\n")
            r = srv.client(password="s3cret", decode_responses=True)
            self.assertEqual(r.xlen("s"), 0)
            r.close()
            r = srv.client(username="default", password="s3cret", decode_responses=True)
            self.assertTrue(r.ping())
            r.close()
            st, body, _ = http_req(srv, "GET", "/streams")
            self.assertEqual((st, body["code"]), (401, "unauthorized"))
            st, body, _ = http_req(srv, "GET", "/streams", headers={"Authorization": "Bearer nope"})
            self.assertEqual(st, 401)
            st, body, _ = http_req(srv, "GET", "/streams", headers={"Authorization": "Bearer s3cret"})
            self.assertEqual(st, 200)
            self.assertEqual(http_req(srv, "GET", "/healthz")[0], 200)
        finally:
            self.assertEqual(srv.stop(), 0)
            shutil.rmtree(d, ignore_errors=True)


class HttpCors(unittest.TestCase):
    def test_web_pages_of_listed_origins_only(self):
        """--http-cors-origin: a listed origin's preflight is answered before authentication and
        its answers (errors too) carry Access-Control-Allow-Origin; a request from any other
        page (an Origin header) is refused before it runs — a "simple" text/plain POST that a
        browser sends without a preflight appends nothing; clients without Origin are as
        before; a live tail takes ?access_token= (EventSource sends no headers), nothing else
        does; HEAD is answered as GET, without a body."""
        d = tempfile.mkdtemp(prefix="evs-server-")
        app, evil = "https://app.example", "https://evil.example"
        srv = Server(os.path.join(d, "data"), "--requirepass", "s3cret", "--http-cors-origin",
                     app + ", http://localhost:3000").start()
        auth = {"Authorization": "Bearer s3cret"}
        try:
            st, body, r = http_req(srv, "OPTIONS", "/streams/s/events", headers={
                "Origin": app, "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type, idempotency-key"})
            self.assertEqual(st, 204)
            self.assertEqual(r.getheader("Access-Control-Allow-Origin"), app)
            self.assertEqual(r.getheader("Vary"), "Origin")
            self.assertIn("POST", r.getheader("Access-Control-Allow-Methods"))
            for h in ("Authorization", "Content-Type", "Idempotency-Key", "Last-Event-ID"):
                self.assertIn(h, r.getheader("Access-Control-Allow-Headers"))
            st, body, r = http_req(srv, "POST", "/streams/s/events", {"type": "a"},
                                   headers=dict(auth, Origin=app, **{"Idempotency-Key": "k1"}))
            self.assertEqual(st, 201, body)
            self.assertEqual(r.getheader("Access-Control-Allow-Origin"), app)
            st, _, r = http_req(srv, "POST", "/streams/s/events", {"type": "a"},
                                headers=dict(auth, Origin=app, **{"Idempotency-Key": "k1"}))
            self.assertEqual(r.getheader("Idempotent-Replayed"), "true")
            self.assertIn("Idempotent-Replayed", r.getheader("Access-Control-Expose-Headers"))
            st, body, r = http_req(srv, "GET", "/streams/s/events", headers={"Origin": app})
            self.assertEqual((st, body["code"]), (401, "unauthorized"))  # readable by the page
            self.assertEqual(r.getheader("Access-Control-Allow-Origin"), app)
            # another page: refused whatever it carries, and nothing runs
            for method, body_, hdrs in (
                    ("POST", b'{"type": "csrf"}', {"Content-Type": "text/plain"}),
                    ("POST", {"type": "csrf"}, auth),
                    ("DELETE", None, auth), ("GET", None, auth),
                    ("OPTIONS", None, {"Access-Control-Request-Method": "DELETE"})):
                st, body, r = http_req(srv, method, "/streams/s" +
                                       ("/events" if method == "POST" else ""), body_,
                                       headers=dict(hdrs, Origin=evil))
                self.assertEqual((st, body["code"]), (403, "origin_not_allowed"), method)
                self.assertIn(evil, body["error"])
                self.assertIsNone(r.getheader("Access-Control-Allow-Origin"))
            st, body, _ = http_req(srv, "GET", "/streams/s/events", headers=auth)  # no Origin
            self.assertEqual((st, [e["type"] for e in body["events"]]), (200, ["a"]))
            st, _, r = http_req(srv, "HEAD", "/streams/s/events", headers=auth)
            self.assertEqual((st, r.getheader("Content-Type")), (200, "application/json"))
            st, _, r = http_req(srv, "HEAD", "/streams/s/events/live", headers=auth)
            self.assertEqual((st, r.getheader("Content-Type")), (200, "text/event-stream"))
            st, _, r = http_req(srv, "OPTIONS", "/streams/s")  # not a preflight
            self.assertEqual((st, r.getheader("Access-Control-Allow-Origin")), (204, None))
            self.assertIn("DELETE", r.getheader("Allow"))
            # EventSource: the token in the query, for live tails only
            self.assertEqual(http_req(srv, "GET", "/streams/s/events?access_token=s3cret")[0],
                             401)
            self.assertEqual(http_req(srv, "GET", "/streams/s/events/live?access_token=nope",
                                      headers={"Origin": app})[0], 401)
            c = http.client.HTTPConnection("127.0.0.1", srv.http_port, timeout=10)
            c.request("GET", "/streams/s/events/live?after=0-0&access_token=s3cret",
                      headers={"Origin": app})
            r = c.getresponse()
            self.assertEqual((r.status, r.getheader("Access-Control-Allow-Origin")), (200, app))
            while True:
                line = r.fp.readline().decode()
                if line.startswith("data: "):
                    self.assertEqual(json.loads(line[6:])["type"], "a")
                    break
            c.close()
        finally:
            self.assertEqual(srv.stop(), 0)
            shutil.rmtree(d, ignore_errors=True)
        # DNS rebinding: a page under a name re-pointed at 127.0.0.1 sends that name as Host
        # (and no Origin on a GET); a loopback server answers loopback names and listed ones
        d = tempfile.mkdtemp(prefix="evs-server-")
        srv = Server(os.path.join(d, "data"), "--http-hosts", "evstore.internal").start()
        try:
            r = srv.client()
            r.xadd("secret", {"type": "a"})
            r.close()
            port = srv.http_port
            for host in ("evil.example:%d" % port, "evil.example", "127.0.0.1.evil.example",
                         "localhost.evil.example:%d" % port):
                st, body, _ = http_req(srv, "GET", "/streams/secret/events",
                                       headers={"Host": host})
                self.assertEqual((st, body["code"]), (403, "host_not_allowed"), host)
            for host in ("127.0.0.1:%d" % port, "localhost:%d" % port, "LOCALHOST",
                         "app.localhost:%d" % port, "[::1]:%d" % port, "10.1.2.3",
                         "evstore.internal:%d" % port, "EVSTORE.internal"):
                st, body, _ = http_req(srv, "GET", "/streams/secret/events",
                                       headers={"Host": host})
                self.assertEqual(st, 200, host)
        finally:
            self.assertEqual(srv.stop(), 0)
            shutil.rmtree(d, ignore_errors=True)
        # without the flag no page may call the API, and "*" lets every one
        for flag, want in ((None, 403), ("*", 200)):
            d = tempfile.mkdtemp(prefix="evs-server-")
            srv = Server(os.path.join(d, "data"),
                         *(["--http-cors-origin", flag] if flag else [])).start()
            try:
                st, _, r = http_req(srv, "POST", "/streams/t/events", b'{"type": "x"}',
                                    headers={"Origin": evil, "Content-Type": "text/plain"})
                self.assertEqual(st, 201 if flag else 403)
                self.assertEqual(r.getheader("Access-Control-Allow-Origin"),
                                 "*" if flag else None)
                r = srv.client()
                self.assertEqual(r.xlen("t"), 1 if flag else 0)
                r.close()
            finally:
                self.assertEqual(srv.stop(), 0)
                shutil.rmtree(d, ignore_errors=True)


class Process(unittest.TestCase):
    def test_second_server_refused_and_sigterm_exits_0(self):
        d = tempfile.mkdtemp(prefix="evs-server-")
        data = os.path.join(d, "data")
        srv = Server(data).start()
        try:
            p = subprocess.run([EVSTORE, "serve", "--data", data, "--port", str(free_port())],
                               capture_output=True, text=True, timeout=10)
            self.assertEqual(p.returncode, 3)
            self.assertIn("in use by another process", p.stderr)
        finally:
            self.assertEqual(srv.stop(), 0)
            shutil.rmtree(d, ignore_errors=True)

    def test_sigterm_answers_blocked_readers_and_exits_0(self):
        """Clients blocked in XREAD and XREADGROUP BLOCK 0 at SIGTERM get their null reply
        and the server exits 0. Their answers read the store: they were answered after it was
        closed (a use after free, seen under ASan in test_tail), now before."""
        d = tempfile.mkdtemp(prefix="evs-server-")
        data = os.path.join(d, "data")
        srv = Server(data).start()
        try:
            r = srv.client()
            r.xadd("s", {"a": "b"})
            r.xgroup_create("s", "g", id="$")
            socks = []
            for cmd in (b"*6\r\n$5\r\nXREAD\r\n$5\r\nBLOCK\r\n$1\r\n0\r\n$7\r\nSTREAMS\r\n"
                        b"$1\r\ns\r\n$1\r\n$\r\n",
                        b"*9\r\n$10\r\nXREADGROUP\r\n$5\r\nGROUP\r\n$1\r\ng\r\n$1\r\nc\r\n"
                        b"$5\r\nBLOCK\r\n$1\r\n0\r\n$7\r\nSTREAMS\r\n$1\r\ns\r\n$1\r\n>\r\n"):
                c = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
                c.sendall(cmd)
                socks.append(c)
            deadline = time.time() + 10
            while r.info("clients")["blocked_clients"] < 2 and time.time() < deadline:
                time.sleep(0.02)
            self.assertEqual(r.info("clients")["blocked_clients"], 2)
            r.close()
            srv.proc.send_signal(signal.SIGTERM)
            self.assertEqual(srv.proc.wait(timeout=20), 0)
            for c in socks:
                got = b""
                while True:
                    chunk = c.recv(100)
                    if not chunk:
                        break
                    got += chunk
                c.close()
                self.assertEqual(got, b"*-1\r\n")
            srv.log.close()
            with open(srv.log.name, errors="replace") as f:
                log = f.read()
            self.assertIn("stopped cleanly", log)
            self.assertNotIn("Sanitizer", log)
        finally:
            srv.stop()
            shutil.rmtree(d, ignore_errors=True)

    def test_out_of_file_descriptors_pauses_accepting_and_recovers(self):
        """Under `ulimit -n 128`: --max-clients is lowered to what fits (fdlimit.c F1); HTTP
        connections stop short of the store's reserve, their listener pausing (F2), and the
        store keeps writing. Before, libevent retried a failing accept() at once and logged
        each failure (4.4 GB of "Too many open files" in a few seconds), and the store, left
        no descriptor for its index.ckpt, failed for good."""
        d = tempfile.mkdtemp(prefix="evs-server-")
        srv = Server(os.path.join(d, "data"), "--max-clients", "1000",
                     wrap=("prlimit", "--nofile=128", "--")).start()
        socks = []
        try:
            c = srv.client(decode_responses=True)
            lowered = int(c.config_get("maxclients")["maxclients"])
            self.assertLess(lowered, 128)
            self.assertGreater(lowered, 32)
            for _ in range(150):  # more than the descriptors left
                try:
                    socks.append(socket.create_connection(("127.0.0.1", srv.http_port), timeout=2))
                except OSError:
                    break
            # the clients stop short of the store's reserve: publishing (index.ckpt each
            # second, new segment files) still works while they hold every other descriptor
            for i in range(200):
                c.xadd("s", {"n": str(i), "pad": "x" * 8000})
            time.sleep(1.5)  # the kernel's backlog holds the rest; the server must not spin
            self.assertEqual(c.xlen("s"), 200)
            for x in socks:
                x.close()
            socks = []
            deadline = time.time() + 5
            while time.time() < deadline:
                try:
                    if http_req(srv, "GET", "/healthz")[0] == 200:
                        break
                except OSError:
                    time.sleep(0.1)
            self.assertEqual(http_req(srv, "GET", "/healthz")[0], 200)
            self.assertTrue(c.ping())
            c.close()
            self.assertEqual(srv.stop(), 0)
            srv.log.close()
            with open(srv.log.name, errors="replace") as f:
                log = f.read()
            self.assertIn("--max-clients lowered to %d" % lowered, log)
            self.assertIn("not accepting HTTP connections for now", log)
            self.assertLessEqual(log.count("not accepting"), 2)  # once a minute at most
            self.assertNotIn("Error from accept", log)
            self.assertNotIn("refused until restart", log)
            self.assertLess(len(log), 20000)
        finally:
            for x in socks:
                x.close()
            srv.stop()
            shutil.rmtree(d, ignore_errors=True)

    def test_shutdown_stops_cleanly_as_sigterm_does(self):
        """SHUTDOWN (redis-cli shutdown, redis-py's shutdown()) answers nothing and closes the
        connection as the server stops cleanly; another client's writes acknowledged before it
        are there after a restart; the NOAUTH rule covers it."""
        d = tempfile.mkdtemp(prefix="evs-server-")
        data = os.path.join(d, "data")
        srv = Server(data, "--requirepass", "pw").start()
        try:
            self.assertEqual(raw(srv.port, b"SHUTDOWN\r\n"), b"-NOAUTH Authentication required.\r\n")
            other = srv.client(password="pw")
            ids = [other.xadd("s", {"n": str(i)}) for i in range(100)]
            r = srv.client(password="pw")
            r.shutdown(nosave=True)  # raises unless the connection closed without a reply
            self.assertEqual(srv.proc.wait(timeout=20), 0)
            srv.log.close()
            with open(srv.log.name, errors="replace") as f:
                log = f.read()
            self.assertIn("SHUTDOWN from a client: stopping", log)
            self.assertIn("stopped cleanly", log)
            self.assertNotIn("Sanitizer", log)
            self.assertNotIn("runtime error", log)
            srv = Server(data, "--requirepass", "pw").start()
            c = srv.client(password="pw")
            self.assertEqual([i for i, _ in c.xrange("s")], ids)
            out = subprocess.run(["redis-cli", "-p", str(srv.port), "-a", "pw", "--no-auth-warning",
                                  "shutdown"], capture_output=True, text=True, timeout=20)
            self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
            self.assertEqual(srv.proc.wait(timeout=20), 0)
        finally:
            srv.stop()
            shutil.rmtree(d, ignore_errors=True)

    def test_sigkill_never_loses_an_acknowledged_xadd(self):
        d = tempfile.mkdtemp(prefix="evs-server-")
        data = os.path.join(d, "data")
        acked = {}  # id -> (stream, payload)
        lock = threading.Lock()
        try:
            for it in range(5):
                srv = Server(data).start()
                stop = threading.Event()

                def writer(w):
                    c = srv.client()
                    n = 0
                    while not stop.is_set():
                        payload = ("w%d-i%d-n%d-" % (w, it, n)).encode() * (1 + n % 20)
                        try:
                            i = c.xadd("k%d" % (w % 2), {"p": payload})
                        except (redis.ConnectionError, redis.TimeoutError, ConnectionError):
                            return
                        with lock:
                            acked[(w % 2, i)] = payload
                        n += 1

                ts = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
                for t in ts:
                    t.start()
                time.sleep(0.3 + 0.1 * it)
                srv.proc.send_signal(signal.SIGKILL)
                srv.proc.wait()
                stop.set()
                for t in ts:
                    t.join()
                srv.log.close()
            srv = Server(data).start()
            r = srv.client()
            for k in (0, 1):
                have = {i: f[b"p"] for i, f in r.xrange("k%d" % k)}
                for (kk, i), payload in acked.items():
                    if kk == k:
                        self.assertIn(i, have, "acknowledged %r lost" % i)
                        self.assertEqual(have[i], payload)
            self.assertGreater(len(acked), 100)
            r.close()
            self.assertEqual(srv.stop(), 0)
            v = subprocess.run([EVSTORE, "verify", "--data", data], capture_output=True, text=True)
            self.assertEqual(v.returncode, 0, v.stdout + v.stderr)
        finally:
            shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    EVSTORE = os.path.abspath(sys.argv.pop(1))
    unittest.main(verbosity=2)
