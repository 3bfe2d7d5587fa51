#!/usr/bin/python3
"""test_fiu.py — the real `evstore serve` binary under Debian's fiu-utils: `fiu-run -x` preloads
libfiu's POSIX wrappers, and `fiu-ctrl` turns failure points on in the running process, so the
failures come from the C library calls the server really makes (its own segment writes and
fsyncs, and LMDB's). Each test checks what the contract promises: a sticky, clear error and no
false acknowledgement; reads keep working; every acknowledged entry is there after a restart
without faults, and the restarted store takes writes again.
Usage: test_fiu.py path/to/evstore"""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import redis

import test_server
from test_server import Server, http_req

EIO = 5
PAYLOAD = "x" * 3000  # 1 MiB segments: a few hundred entries roll one


class Fiu(unittest.TestCase):
    def setUp(self):
        if not shutil.which("fiu-run"):
            self.fail("fiu-run not found: install Debian's fiu-utils (scripts/deps.sh does)")
        self.dir = tempfile.mkdtemp(prefix="evs-fiu-")
        self.data = os.path.join(self.dir, "data")
        self.srv = Server(self.data, wrap=("fiu-run", "-x")).start()

    def tearDown(self):
        if self.srv.proc.poll() is None:
            self.srv.stop(signal.SIGKILL)
        with open(os.path.join(self.dir, "server.log"), errors="replace") as f:
            self.log = f.read()
        shutil.rmtree(self.dir, ignore_errors=True)
        self.assertNotIn("Sanitizer", self.log)

    def fiu(self, command):
        p = subprocess.run(["fiu-ctrl", "-c", command, str(self.srv.proc.pid)],
                           capture_output=True, text=True, timeout=10)
        self.assertEqual(p.returncode, 0, p.stderr)

    def publish_until_error(self, r, start, limit=5000):
        """XADD one at a time (so at most one request is in the failing batch) until an
        error; returns (acknowledged IDs, the error text)."""
        acked = []
        for i in range(start, start + limit):
            try:
                acked.append(r.xadd("s", {"n": str(i), "p": PAYLOAD}))
            except redis.ResponseError as e:
                return acked, str(e)
        return acked, None

    def restart_clean_and_check(self, acked, may_have_one_more=True):
        """Stop (exit 3: the store closed with the earlier error), start without fiu, and find
        every acknowledged entry, in order; the one request of the failed batch may or may
        not have reached the disk (it was never acknowledged)."""
        self.assertEqual(self.srv.stop(), 3)
        self.srv.wrap = ()
        self.srv.start()
        r = self.srv.client(decode_responses=True)
        got = [e[0] for e in r.xrange("s")]
        self.assertEqual(got[:len(acked)], acked)
        self.assertLessEqual(len(got) - len(acked), 1 if may_have_one_more else 0)
        r.xadd("s", {"after": "restart"})
        r.close()
        p = subprocess.run([test_server.EVSTORE, "verify", "--data", self.data],
                           capture_output=True, text=True)
        self.assertEqual(p.returncode, 4, p.stdout + p.stderr)  # in use by the server: refused
        self.assertEqual(self.srv.stop(), 0)
        p = subprocess.run([test_server.EVSTORE, "verify", "--data", self.data],
                           capture_output=True, text=True)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)

    def test_fdatasync_eio_is_sticky_and_loses_nothing(self):
        r = self.srv.client(decode_responses=True)
        acked, err = self.publish_until_error(r, 0, 300)
        self.assertIsNone(err)
        self.fiu("enable name=posix/io/sync/fdatasync,failinfo=%d" % EIO)
        more, err = self.publish_until_error(r, 300)
        acked += more
        self.assertIsNotNone(err)
        self.assertRegex(err, r"fdatasync of segment \d+\.seg failed \(Input/output error\); "
                              r"writes refused until restart")
        # sticky even with the fault gone: an fsync error may have dropped dirty pages
        self.fiu("disable name=posix/io/sync/fdatasync")
        with self.assertRaisesRegex(redis.ResponseError, "writes refused until restart"):
            r.xadd("s", {"n": "again"})
        self.assertEqual([e[0] for e in r.xrange("s")], acked)  # reads: exactly the acked
        st, body, _ = http_req(self.srv, "POST", "/streams/s/events", {"type": "t"})
        self.assertEqual((st, body["code"]), (503, "store_failed"))
        self.assertEqual(http_req(self.srv, "GET", "/readyz")[0], 503)
        r.close()
        self.restart_clean_and_check(acked)

    def test_index_write_eio_is_sticky_and_the_index_catches_up(self):
        # LMDB writes its pages with pwrite (the log uses pwritev): fail the index alone
        r = self.srv.client(decode_responses=True)
        acked, _ = self.publish_until_error(r, 0, 100)
        self.fiu("enable name=posix/io/rw/pwrite,failinfo=%d" % EIO)
        more, err = self.publish_until_error(r, 100, 20000)
        acked += more
        self.assertIsNotNone(err, "the index never committed")
        self.assertIn("index update failed", err)
        self.assertIn("writes refused until restart", err)
        self.assertEqual([e[0] for e in r.xrange("s")], acked)
        r.close()
        self.restart_clean_and_check(acked)

    def test_short_writes_are_completed(self):
        # a third of the log's pwritev calls write only part of what they were given
        self.fiu("enable_random name=posix/io/rw/pwritev/reduce,probability=0.3")
        r = self.srv.client(decode_responses=True)
        acked, err = self.publish_until_error(r, 0, 1200)  # past three segment rolls
        self.assertIsNone(err)
        self.assertEqual([e[0] for e in r.xrange("s")], acked)
        self.assertGreaterEqual(r.info("evstore")["segments"], 4)
        r.close()
        self.assertEqual(self.srv.stop(), 0)
        self.srv.wrap = ()
        self.srv.start()
        r = self.srv.client(decode_responses=True)
        got = r.xrange("s")
        self.assertEqual([e[0] for e in got], acked)
        self.assertTrue(all(f["p"] == PAYLOAD for _, f in got))
        r.close()
        self.assertEqual(self.srv.stop(), 0)


if __name__ == "__main__":
    test_server.EVSTORE = os.path.abspath(sys.argv.pop(1))
    unittest.main(verbosity=2)
