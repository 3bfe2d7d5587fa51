#!/usr/bin/python3
"""test_replication.py — leader and followers as real `evstore serve` processes on loopback,
driven by redis-py: byte-identical convergence under write load, a follower SIGKILLed and
restarted, two followers and WAIT, consumer groups on a follower, READONLY, passwords, and a
follower of another store refused. Usage: test_replication.py path/to/evstore"""
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.request

import redis

import test_server
from test_server import Server, http_req, run_workers


class Proxy:
    """A TCP proxy on loopback between a follower and its leader, that can cut every link
    (both directions closed at once) or stall them (bytes held, sockets open)."""

    def __init__(self, upstream_port):
        self.up = upstream_port
        self.lis = socket.socket()
        self.lis.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lis.bind(("127.0.0.1", 0))
        self.lis.listen(8)
        self.port = self.lis.getsockname()[1]
        self.links = []
        self.go = threading.Event()
        self.go.set()
        self.delay = 0  # seconds slept after each piece forwarded: a slow link
        self.closed = False
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while not self.closed:
            try:
                c, _ = self.lis.accept()
            except OSError:
                return
            try:
                u = socket.create_connection(("127.0.0.1", self.up))
            except OSError:
                c.close()
                continue
            self.links.append((c, u))
            for a, b in ((c, u), (u, c)):
                threading.Thread(target=self.pump, args=(a, b), daemon=True).start()

    def pump(self, a, b):
        try:
            while True:
                d = a.recv(65536)
                if not d:
                    break
                self.go.wait()
                b.sendall(d)
                if self.delay:
                    time.sleep(self.delay)
        except OSError:
            pass
        test_server.shut(a, b)

    def cut(self):
        links, self.links = self.links, []
        for c, u in links:
            test_server.shut(c, u)  # one its pump shut already is closed all the same
            c.close()
            u.close()
        return len(links)

    def stall(self, on):
        (self.go.clear if on else self.go.set)()

    def close(self):
        self.closed = True
        self.go.set()
        self.cut()
        self.lis.close()


class Base(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="evs-repl-")
        self.servers = []

    def start(self, name, *flags):
        s = Server(os.path.join(self.dir, name), *flags).start()
        self.servers.append(s)
        return s

    def follower(self, name, leader, *flags):
        return self.start(name, "--replica-of", "127.0.0.1:%d" % leader.port, *flags)

    def tearDown(self):
        for s in self.servers:
            if s.proc.poll() is None:
                self.assertEqual(s.stop(), 0)
        log = ""  # (a test whose servers all ran on its own mounts logged there)
        if os.path.exists(os.path.join(self.dir, "server.log")):
            with open(os.path.join(self.dir, "server.log"), errors="replace") as f:
                log = f.read()
        if os.environ.get("KEEP"):
            print(self.dir)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)
        self.assertNotIn("Sanitizer", log, log[-3000:])
        self.assertNotIn("runtime error", log, log[-3000:])

    def log(self):
        with open(os.path.join(self.dir, "server.log"), errors="replace") as f:
            return f.read()

    def follower_behind_retention(self):
        """A leader (retention: 2,000 entries) and a stopped follower that has its first
        entry, which the leader's retention has since deleted: (leader, its client, follower)."""
        leader = self.start("leader", "--retention-max-entries", "2000")
        lr = leader.client()
        f = self.follower("f", leader)
        lr.xadd("s", {"a": "b"})
        self.assertEqual(lr.execute_command("WAIT", "1", "5000"), 1)
        self.assertEqual(f.stop(), 0)
        self.servers.remove(f)
        self.fill_past_retention(lr, 6000, 400)
        return leader, lr, f

    @staticmethod
    def copy_leftovers(data):
        """What an interrupted copy of a leader's store left in follower folder data."""
        return [n for n in os.listdir(data) if n.startswith((".new-", ".snapshot-")) or
                n == "SWAP"]

    def copying(self, data, leader_port, own=0):
        """Start `evstore serve` on follower folder data told to copy its leader's store
        first (a SNAPSHOT marker saying `own` bytes of its own), logging to server.log, on a
        free port: (port, process). Not in self.servers: the caller ends it."""
        with open(os.path.join(data, "SNAPSHOT"), "w") as fh:
            fh.write("snapshot own %d\n" % own)
        port = test_server.free_port()
        with open(os.path.join(self.dir, "server.log"), "ab") as log:
            return port, subprocess.Popen(
                [test_server.EVSTORE, "serve", "--data", data, "--port", str(port),
                 "--http-port", "0", "--segment-bytes", "1m", "--replica-of",
                 "127.0.0.1:%d" % leader_port], stdout=log, stderr=log)

    def fill_past_retention(self, c, n=12000, pad=400):
        """Write n entries of pad bytes to stream s through client c (1 MiB segments: several
        fill and fall out), and wait until retention has deleted the first segments."""
        p = c.pipeline(transaction=False)
        for i in range(n):
            p.xadd("s", {"pad": "r" * pad})
            if len(p) >= 1000:
                p.execute()
        p.execute()
        deadline = time.time() + 20
        while c.info("evstore")["log_start"] == 0 and time.time() < deadline:
            time.sleep(0.2)
        self.assertGreater(c.info("evstore")["log_start"], 0)

    def same_length(self, lr, fr, key, timeout=10):
        """Assert that follower client fr and leader client lr see key at the same length.
        Retention trims on the leader's own schedule (a pass a second), so a trim may land
        between the two reads, even after caught_up: read again until that trim has reached
        the follower too, up to timeout seconds."""
        deadline = time.time() + timeout
        while fr.xlen(key) != lr.xlen(key) and time.time() < deadline:
            time.sleep(0.05)
        self.assertEqual(fr.xlen(key), lr.xlen(key))

    def stop_and_verify(self, node):
        """Stop node cleanly, then `evstore verify` its folder: 0 problems."""
        self.assertEqual(node.stop(), 0)
        self.servers.remove(node)
        out = subprocess.run([test_server.EVSTORE, "verify", "--data", node.data],
                             capture_output=True, text=True)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)

    def followers_listed(self, lr, n):
        """Wait (up to 10 s) until the leader's ROLE lists n followers."""
        deadline = time.time() + 10
        while len(lr.execute_command("ROLE")[2]) < n and time.time() < deadline:
            time.sleep(0.05)

    def caught_up(self, leader, *followers, timeout=30):
        lr = leader.client()
        deadline = time.time() + timeout
        while time.time() < deadline:
            end = lr.info("evstore")["log_bytes"]
            role = lr.execute_command("ROLE")
            offs = {int(r[1]): int(r[2]) for r in role[2]}
            if all(offs.get(f.port, -1) >= end for f in followers) and \
                    all(f.client().execute_command("ROLE")[4] >= end for f in followers):
                return
            time.sleep(0.05)
        self.fail("followers did not catch up: leader at %d, ROLE %r" % (end, role))

    def same_segments(self, leader, follower):
        """Every segment file of the leader's log, byte for byte, on the follower, up to the
        zeros each file may still have at its end: the active one's preallocated space, and a
        sealed one's until the releaser has cut it (paced, and redone after a restart)."""
        deadline = time.time() + 5  # a segment the leader's retention just deleted goes from
        while True:                 # the follower within a heartbeat and a retention pass
            lseg = sorted(glob.glob(os.path.join(leader.data, "log", "*.seg")))
            fseg = sorted(glob.glob(os.path.join(follower.data, "log", "*.seg")))
            if [os.path.basename(p) for p in lseg] == [os.path.basename(p) for p in fseg] or \
                    time.time() > deadline:
                break
            time.sleep(0.1)
        self.assertEqual([os.path.basename(p) for p in lseg], [os.path.basename(p) for p in fseg])
        end = leader.client().info("evstore")["log_bytes"]
        for a, b in zip(lseg, fseg):
            with open(a, "rb") as x, open(b, "rb") as y:
                da, db = x.read(), y.read()
            self.assertEqual(da.rstrip(b"\0"), db.rstrip(b"\0"), a)
        return len(lseg), end


class Replication(Base):
    def test_an_offline_backup_of_a_stopped_follower_leaves_it_a_follower(self):
        """`evstore backup --data` of a stopped follower's folder opens it as a follower: no
        epoch of its own begun, FOLLOWING kept, its log and EPOCHS as they were; started
        again, the follower continues with nothing cut, and the backup restores. `evstore
        append` there is refused (exit 3), nothing written. (Until session 32 both opened it
        to lead: an epoch record written, which the follower then had to cut into
        log/*.diverged, its index rebuilt; the appended entry cut with it.)"""
        leader = self.start("leader")
        lr = leader.client()
        f = self.follower("f", leader)
        for i in range(100):
            lr.xadd("s", {"i": str(i)})
        self.assertEqual(lr.execute_command("WAIT", "1", "5000"), 1)
        self.assertEqual(f.stop(), 0)
        self.servers.remove(f)

        def state():
            segs = [open(p, "rb").read() for p in
                    sorted(glob.glob(os.path.join(f.data, "log", "*.seg")))]
            with open(os.path.join(f.data, "EPOCHS")) as fh:
                return segs, fh.read(), os.path.exists(os.path.join(f.data, "FOLLOWING"))
        before = state()
        self.assertTrue(before[2])
        out = subprocess.run([test_server.EVSTORE, "append", "--data", f.data, "s", "k", "v"],
                             capture_output=True, text=True)
        self.assertEqual(out.returncode, 3, out.stdout + out.stderr)
        self.assertIn("holds a follower's store", out.stderr)
        self.assertEqual(state(), before)
        out = subprocess.run([test_server.EVSTORE, "backup", "--data", f.data, "--out",
                              os.path.join(self.dir, "bk"), "--quiet"],
                             capture_output=True, text=True)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertNotIn("opens to lead", out.stderr)
        self.assertEqual(state(), before)
        f = self.follower("f", leader)
        lr.xadd("s", {"after": "backup"})
        self.assertEqual(lr.execute_command("WAIT", "1", "5000"), 1)
        self.caught_up(leader, f)
        self.assertEqual(f.client().xlen("s"), 101)
        self.assertNotIn("told to cut", self.log())
        self.assertEqual(glob.glob(os.path.join(f.data, "log", "*.diverged")), [])
        rc = subprocess.run([test_server.EVSTORE, "restore", "--from",
                             os.path.join(self.dir, "bk"), "--data",
                             os.path.join(self.dir, "restored"), "--quiet"],
                            capture_output=True, text=True)
        self.assertEqual(rc.returncode, 0, rc.stderr)
        self.stop_and_verify(f)

    def test_a_follower_seeded_from_a_backup_continues_from_its_cut(self):
        """`evstore restore --follower` of an online backup seeds a follower: no epoch of its
        own, marked a follower's; started with --replica-of the backed-up leader, it continues
        from the backup's cut (nothing cut, no index rebuilt) and its segments become the
        leader's byte for byte. (A plain restore begins an epoch, which the follower must cut
        first, its index rebuilt.)"""
        leader = self.start("leader")
        lr = leader.client()
        for i in range(2000):
            lr.xadd("s", {"i": str(i)})
        bk = os.path.join(self.dir, "bk")
        out = subprocess.run([test_server.EVSTORE, "backup", "--server",
                              "127.0.0.1:%d" % leader.port, "--out", bk, "--quiet"],
                             capture_output=True, text=True)
        self.assertEqual(out.returncode, 0, out.stderr)
        for i in range(500):
            lr.xadd("s", {"after": str(i)})
        fdata = os.path.join(self.dir, "f")
        out = subprocess.run([test_server.EVSTORE, "restore", "--from", bk, "--data", fdata,
                              "--follower", "--quiet"], capture_output=True, text=True)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("a follower's store, in its leader's epoch 1", out.stdout)
        self.assertTrue(os.path.exists(os.path.join(fdata, "FOLLOWING")))
        f = self.follower("f", leader)
        lr.xadd("s", {"last": "1"})
        self.assertEqual(lr.execute_command("WAIT", "1", "10000"), 1)
        self.caught_up(leader, f)
        self.same_segments(leader, f)
        self.assertEqual(f.client().xlen("s"), 2501)
        log = self.log()
        self.assertNotIn("told to cut", log)
        self.assertNotIn("rebuilding from the log", log)
        self.assertNotIn("copy its store", log)
        self.stop_and_verify(f)

    def test_follower_converges_byte_identically_under_load(self):
        leader = self.start("leader")
        follower = self.follower("follower", leader)
        stop = threading.Event()
        errors = []

        def writer(k):
            c = leader.client()
            n = 0
            try:
                while not stop.is_set():
                    p = c.pipeline(transaction=False)
                    for i in range(20):
                        p.xadd("w%d" % (n % 5), {"source": "t%d" % k, "n": str(n), "pad": "p" * 200})
                        n += 1
                    p.execute()
            except Exception as e:  # noqa: BLE001 — reported below
                errors.append(e)

        run_workers(writer, 3, 3, stop)
        self.assertEqual(errors, [])
        self.caught_up(leader, follower)
        nseg, end = self.same_segments(leader, follower)
        self.assertGreater(nseg, 3)  # sealed segments were shipped, seal records and all
        lr, fr = leader.client(decode_responses=True), follower.client(decode_responses=True)
        for k in ("w0", "w1", "w2", "w3", "w4"):
            self.assertEqual(fr.xrange(k), lr.xrange(k))
        # reads are served, writes refused as by a Redis replica
        self.assertEqual(fr.xlen("w0"), lr.xlen("w0"))
        for cmd in (("XADD", "w0", "*", "a", "b"), ("XDEL", "w0", "1-1"), ("DEL", "w0"),
                    ("XGROUP", "CREATE", "w0", "g", "0"), ("XTRIM", "w0", "MAXLEN", "1"),
                    ("XRETENTION", "w0", "SET", "MAXENTRIES", "5")):
            with self.assertRaisesRegex(redis.ResponseError,
                                        "^You can't write against a read only replica."):
                fr.execute_command(*cmd)
        req = urllib.request.Request("http://127.0.0.1:%d/streams/w0/events" % follower.http_port,
                                     data=b'{"type":"x"}', method="POST")
        with self.assertRaises(urllib.error.HTTPError) as cm:
            urllib.request.urlopen(req, timeout=5)
        self.assertEqual(cm.exception.code, 403)
        self.assertEqual(fr.execute_command("ROLE")[:4], ["slave", "127.0.0.1", leader.port,
                                                          "connected"])
        info = fr.info("replication")
        self.assertEqual(info["role"], "slave")
        self.assertEqual(info["master_link_status"], "up")
        role = lr.execute_command("ROLE")
        self.assertEqual(role[0], "master")
        self.assertEqual(role[2][0][1], str(follower.port))
        with self.assertRaisesRegex(redis.ResponseError, "WAIT cannot be used with replica"):
            fr.execute_command("WAIT", "1", "10")

    def test_streams_dropped_on_the_leader_are_freed_on_the_follower_too(self):
        """A stream per session, most dropped: the follower applies the drops in its own
        writer and frees the dropped streams there too (storage/streams.c S3, numtab.h), and
        lists, scans and restarts with exactly the leader's streams."""
        leader = self.start("leader")
        follower = self.follower("follower", leader)
        lr, fr = leader.client(decode_responses=True), follower.client(decode_responses=True)
        names = ["session:%d" % i for i in range(6000)]  # numbers past the first 4,096 leaf
        for at in range(0, len(names), 1000):
            p = lr.pipeline(transaction=False)
            for n in names[at:at + 1000]:
                p.xadd(n, {"source": "agent", "type": "turn"})
            p.execute()
        lr.delete(*names[:5500])
        lr.xadd("tick", {"t": "1"})
        self.caught_up(leader, follower)
        def freed():
            lr.xadd("tick", {"t": "1"})  # the follower's writer frees them between requests
            self.caught_up(leader, follower)
            return fr.info("evstore")["streams_dropped_held"] == 0
        self.assertTrue(test_server.eventually(freed),
                        f"{fr.info('evstore')['streams_dropped_held']} dropped streams held")
        want = sorted(names[5500:] + ["tick"])
        self.assertEqual(sorted(fr.scan_iter(count=100)), want)
        self.assertEqual(sorted(lr.scan_iter(count=100)), want)
        self.same_segments(leader, follower)
        self.stop_and_verify(follower)
        follower = self.follower("follower", leader)
        self.caught_up(leader, follower)
        self.assertEqual(sorted(follower.client(decode_responses=True).keys("*")), want)

    def test_follower_killed_under_load_restarts_and_catches_up(self):
        leader = self.start("leader")
        follower = self.follower("follower", leader)
        stop = threading.Event()

        def writer():
            c = leader.client()
            while not stop.is_set():
                p = c.pipeline(transaction=False)
                for i in range(50):
                    p.xadd("s", {"pad": "k" * 500})
                p.execute()

        t = threading.Thread(target=writer)
        t.start()
        time.sleep(1.0)
        follower.stop(signal.SIGKILL)
        self.servers.remove(follower)
        time.sleep(0.5)
        follower = self.follower("follower", leader)
        time.sleep(1.0)
        stop.set()
        t.join()
        self.caught_up(leader, follower)
        self.same_segments(leader, follower)
        self.assertEqual(follower.client().xlen("s"), leader.client().xlen("s"))
        self.assertIn("replicates from log position", self.log())

    def test_a_new_follower_of_a_40_mb_log_catches_up_byte_identically(self):
        """A new follower of a 40 MB log (64 MiB segments: no seal forces a sync between its
        batches) ends byte-identical, every entry shown. Whether its batches' syncs overlap
        the next batch (writer.c W10) depends on this host's disk and loopback: a follower
        whose writer keeps up with the link has nothing waiting, so nothing to overlap (a CI
        host saw 0). test_replica.c checks the overlap with every frame queued first."""
        leader = self.start("leader", "--segment-bytes", "64m", "--fsync", "no")
        c = leader.client()
        for b in range(40):
            p = c.pipeline(transaction=False)
            for i in range(500):
                p.xadd("s%d" % (i % 10), {"source": "a%d" % (i % 7), "pad": "x" * 2000})
            p.execute()
        follower = self.follower("follower", leader, "--segment-bytes", "64m")
        self.caught_up(leader, follower, timeout=60)
        info = follower.client().info("evstore")
        self.assertGreater(info["fsyncs"], 0)  # its frames were answered once synced
        self.assertLessEqual(info["fsyncs_overlapped"], info["fsyncs"])
        self.same_segments(leader, follower)
        lr, fr = leader.client(), follower.client()
        for k in range(10):
            self.assertEqual(fr.xlen("s%d" % k), 2000)
            self.assertEqual(fr.xrange("s%d" % k, count=3), lr.xrange("s%d" % k, count=3))
        # 40 MB is below the default --full-sync-bytes (256m): it replayed the log
        self.assertNotIn("follower sent to take a snapshot", self.log())

    def test_a_new_follower_of_a_log_past_full_sync_bytes_copies_the_store(self):
        """A new follower of a log of --full-sync-bytes or more is answered SNAPSHOT
        (repl_leader.c F7): it copies the store as a backup would, the segments byte for byte
        and the index compacted, continues from the copy's cut, and ends byte-identical, with
        the groups, its index serving filtered reads. (Mutation-checked:
        with F7 ignored, the log has no SNAPSHOT; with the threshold ignored, the 40 MB test
        above fails.)"""
        leader = self.start("leader", "--full-sync-bytes", "2m")
        lr = leader.client(decode_responses=True)
        p = lr.pipeline(transaction=False)
        for i in range(6000):  # ~3 MB of log over 1 MiB segments: some sealed, one active
            p.xadd("s%d" % (i % 5), {"source": "a%d" % (i % 7), "pad": "x" * 400})
        p.execute()
        lr.xgroup_create("s1", "g", id="0")
        lr.xreadgroup("g", "c", {"s1": ">"}, count=7)
        self.assertGreaterEqual(lr.info("evstore")["log_bytes"], 2 << 20)
        f = self.follower("f", leader)
        self.caught_up(leader, f)
        log = self.log()
        self.assertIn("a new follower, and the leader's log holds", log)
        self.assertIn("the leader's store is copied", log)
        self.assertEqual(glob.glob(os.path.join(f.data, ".replaced-*")), [])  # empty: gone
        lr.xadd("s0", {"after": "copy"})  # and it streams from the cut on
        self.assertEqual(lr.execute_command("WAIT", "1", "10000"), 1)
        self.caught_up(leader, f)
        self.same_segments(leader, f)
        fr = f.client(decode_responses=True)
        for k in range(5):
            self.assertEqual(fr.xrange("s%d" % k), lr.xrange("s%d" % k))
        self.assertEqual(fr.xpending("s1", "g")["pending"], 7)
        self.assertEqual(len(fr.xrange("s1", count=2000)), 1200)
        # the copied index serves filtered reads: a read by source over HTTP
        st, body, _ = http_req(f, "GET", "/streams/s3/events?source=a3&limit=1000")
        self.assertEqual(st, 200)
        self.assertEqual(len(body["events"]), len([i for i in range(6000)
                                                   if i % 5 == 3 and i % 7 == 3]))
        self.stop_and_verify(f)

    def test_two_followers_and_wait(self):
        leader = self.start("leader")
        f1 = self.follower("f1", leader)
        f2 = self.follower("f2", leader)
        lr = leader.client()
        self.followers_listed(lr, 2)
        for i in range(200):
            lr.xadd("s", {"i": str(i)})
        self.assertEqual(lr.execute_command("WAIT", "2", "5000"), 2)
        self.assertEqual(lr.execute_command("WAIT", "3", "200"), 2)  # times out with what it has
        for f in (f1, f2):
            self.assertEqual(f.client().xlen("s"), 200)
        self.caught_up(leader, f1, f2)
        self.same_segments(leader, f1)
        self.same_segments(leader, f2)
        info = lr.info("replication")
        self.assertEqual(info["connected_slaves"], 2)
        # a follower gone: WAIT counts only the one left
        f2.stop()
        self.servers.remove(f2)
        lr.xadd("s", {"after": "f2"})
        self.assertEqual(lr.execute_command("WAIT", "2", "300"), 1)

    def test_consumer_groups_replicate(self):
        leader = self.start("leader")
        follower = self.follower("follower", leader)
        lr = leader.client(decode_responses=True)
        for i in range(30):
            lr.xadd("jobs", {"n": str(i)})
        lr.xgroup_create("jobs", "g", id="0")
        lr.xreadgroup("g", "alice", {"jobs": ">"}, count=10)
        lr.xreadgroup("g", "bob", {"jobs": ">"}, count=5)
        lr.xack("jobs", "g", *[e[0] for e in lr.xrange("jobs", count=3)])
        lr.execute_command("WAIT", "1", "5000")
        self.caught_up(leader, follower)
        fr = follower.client(decode_responses=True)

        def groups(r):
            out = []
            for g in r.xinfo_groups("jobs"):
                pend = r.xpending_range("jobs", g["name"], "-", "+", 100)
                out.append((g, [(p["message_id"], p["consumer"], p["times_delivered"])
                                for p in pend]))  # not the clock-dependent idle time
            return out

        self.assertEqual(groups(fr), groups(lr))

    def test_password(self):
        leader = self.start("leader", "--requirepass", "s3cret")
        bad = self.follower("bad", leader, "--leader-password", "nope")
        good = self.follower("good", leader, "--leader-password", "s3cret")
        lr = leader.client(password="s3cret")
        lr.xadd("s", {"a": "b"})
        self.assertEqual(lr.execute_command("WAIT", "1", "5000"), 1)
        self.assertEqual(good.client().xlen("s"), 1)
        self.assertEqual(bad.client().xlen("s"), 0)
        self.assertEqual(bad.client().execute_command("ROLE")[3], b"connect")
        self.assertRegex(self.log(), "replication link to 127.0.0.1:%d down: the leader says: "
                                     "WRONGPASS" % leader.port)

    def test_follower_of_another_store_is_refused(self):
        leader = self.start("leader")
        other = self.start("other")
        other.client().xadd("mine", {"a": "b"})
        self.assertEqual(other.stop(), 0)
        self.servers.remove(other)
        follower = self.follower("other", leader)
        leader.client().xadd("s", {"a": "b"})
        time.sleep(1.0)
        self.assertEqual(follower.client().xlen("s"), 0)
        self.assertEqual(follower.client(decode_responses=True).xrange("mine")[0][1], {"a": "b"})
        self.assertIn("replication refused: the follower holds a different store", self.log())


class Failover(Base):
    def promote(self, node):
        p = __import__("subprocess").run([test_server.EVSTORE, "promote", "--server",
                                          "127.0.0.1:%d" % node.port],
                                         capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)

    def test_promotion_keeps_every_confirmed_write_and_the_old_leader_rejoins(self):
        leader = self.start("leader")
        follower = self.follower("follower", leader)
        lr = leader.client(decode_responses=True)
        confirmed = []
        for b in range(20):
            ids = [lr.xadd("orders", {"b": str(b), "i": str(i)}) for i in range(25)]
            if lr.execute_command("WAIT", "1", "2000") == 1:
                confirmed += ids
        self.assertEqual(len(confirmed), 500)
        leader.stop(signal.SIGKILL)
        self.servers.remove(leader)
        self.promote(follower)
        fr = follower.client(decode_responses=True)
        self.assertEqual(fr.execute_command("ROLE")[0], "master")
        self.assertEqual(fr.info("evstore")["epoch"], 2)
        have = {e[0] for e in fr.xrange("orders")}
        self.assertEqual([i for i in confirmed if i not in have], [])
        new_id = fr.xadd("orders", {"after": "promotion"})
        # the old leader, restarted as a follower of the new one, had nothing unreplicated:
        # its history is a prefix of the new leader's, it continues and converges
        old = self.follower("leader", follower)
        self.assertEqual(fr.execute_command("WAIT", "1", "5000"), 1)
        self.caught_up(follower, old)
        self.same_segments(follower, old)
        self.assertEqual(old.client(decode_responses=True).xrange("orders")[-1][0], new_id)
        self.assertEqual(old.client().info("evstore")["epoch"], 2)

    def test_a_follower_promoted_under_ack_all_holds_reads_for_its_followers(self):
        """A follower started with --ack all leads by it once promoted: what it writes with
        no follower of its own is durable but not shown to readers (the visibility cap set at
        promotion), until a follower has it. (Mutation-checked: without the cap at
        promotion, the stream shows at once.)"""
        leader = self.start("leader")
        follower = self.follower("follower", leader, "--ack", "all", "--min-replicas", "1",
                                 "--ack-timeout", "300")
        leader.client().xadd("s", {"i": "0"})
        self.caught_up(leader, follower)
        leader.stop()
        self.servers.remove(leader)
        self.promote(follower)
        fr = follower.client(decode_responses=True)
        with self.assertRaisesRegex(redis.ResponseError, "^NOREPLICAS"):
            fr.xadd("s", {"i": "refused"})
        self.assertTrue(fr.xgroup_create("fresh", "g", id="$", mkstream=True))  # timed out
        self.assertEqual(fr.exists("fresh"), 0)
        self.assertGreater(int(fr.info("replication")["repl_held_bytes"]), 0)
        self.follower("f2", follower)
        deadline = time.time() + 10
        while not fr.exists("fresh") and time.time() < deadline:
            time.sleep(0.05)
        self.assertEqual(fr.exists("fresh"), 1)
        self.assertEqual(fr.xlen("s"), 1)

    def test_divergent_old_leader_cuts_its_tail_and_converges(self):
        leader = self.start("leader")
        follower = self.follower("follower", leader)
        lr = leader.client()
        for i in range(100):
            lr.xadd("s", {"i": str(i)})
        self.assertEqual(lr.execute_command("WAIT", "1", "5000"), 1)
        self.assertEqual(follower.stop(), 0)  # the link is gone ...
        self.servers.remove(follower)
        for i in range(10):
            lr.xadd("s", {"unreplicated": str(i)})  # ... so these exist on the leader only
        leader.stop(signal.SIGKILL)
        self.servers.remove(leader)
        # the operator starts the follower as a leader: it was following, so it begins epoch 2
        new = self.start("follower")
        nr = new.client(decode_responses=True)
        self.assertEqual(nr.info("evstore")["epoch"], 2)
        self.assertIn("was a follower and opens to lead", self.log())
        nr.xadd("s", {"new": "leader"})
        # the old leader's 10 entries lie past where epoch 2 began: it is told to cut them
        # (kept in .diverged files), restarts itself, and follows from there
        old = self.follower("leader", new)
        orr = self.converged_after_cut(old, new, b"unreplicated", 10)
        self.assertEqual(orr.xlen("s"), 101)
        log = self.log()
        self.assertIn("follower told to cut its log at", log)
        self.assertRegex(log, r"cutting \d+ bytes at log position \d+ \(kept in log/\*.diverged\)")
        self.assertIn("(the leader's history parts there); kept in log/*.diverged", log)
        # the cut moved the index aside (truncate.c T3): rebuilt as a missing one, with no
        # claim of lost records and no damaged copy kept (until session 32: both, each cut)
        self.assertNotIn("which the log no longer holds", log)
        self.assertEqual(glob.glob(os.path.join(old.data, "index.*")),
                         [os.path.join(old.data, "index.ckpt")])

    def test_stream_numbers_made_in_a_cut_tail_name_the_new_leaders_streams(self):
        """The old leader's unreplicated tail creates three streams and drops two (one of them
        the follower had); the new leader then gives the same numbers to streams of its own
        (storage/streams.c S4: a create names the next number). After the cut, the old leader
        holds the new leader's streams under those numbers, the dropped replicated stream is
        back, and none of the streams of its tail are left."""
        leader = self.start("leader")
        follower = self.follower("follower", leader)
        lr = leader.client(decode_responses=True)
        lr.xadd("s", {"i": "0"})
        lr.xadd("kept", {"i": "0"})
        self.assertEqual(lr.execute_command("WAIT", "1", "5000"), 1)
        self.assertEqual(follower.stop(), 0)
        self.servers.remove(follower)
        for i in range(3):
            lr.xadd("old-%d" % i, {"unreplicated": str(i)})  # the next three numbers
        lr.delete("kept", "old-0")
        lr.xadd("s", {"unreplicated": "3"})
        leader.stop(signal.SIGKILL)
        self.servers.remove(leader)
        new = self.start("follower")
        nr = new.client(decode_responses=True)
        for i in range(4):
            nr.xadd("new-%d" % i, {"i": str(i)})  # the same three numbers, and one more
        old = self.follower("leader", new)
        orr = self.converged_after_cut(old, new, b"unreplicated", 4)
        want = ["kept", "new-0", "new-1", "new-2", "new-3", "s"]
        for node in (orr, nr):
            self.assertEqual(sorted(node.scan_iter(count=2)), want)
            self.assertEqual(node.xrange("kept")[0][1], {"i": "0"})
            self.assertEqual([e[1] for e in node.xrange("new-2")], [{"i": "2"}])
        self.assertEqual(orr.xrange("s"), nr.xrange("s"))
        self.assertEqual(orr.dbsize(), 6)
        self.assertEqual(orr.info("evstore")["streams_dropped_held"], 0)
        # a new stream on the new leader takes the next number on both (S4 holds on the old one)
        nr.xadd("after", {"i": "1"})
        self.caught_up(new, old)
        self.assertEqual(orr.xrange("after"), nr.xrange("after"))
        self.same_segments(new, old)
        self.stop_and_verify(old)
        old = self.follower("leader", new)
        self.caught_up(new, old)
        self.assertEqual(sorted(old.client(decode_responses=True).keys("*")),
                         sorted(want + ["after"]))

    def test_a_leader_that_lost_its_tail_in_a_crash_fences_it_with_a_new_epoch(self):
        # Under --fsync everysec a follower can hold records its leader had not synced; a power
        # cut then takes them from the leader, which comes back (as leader: the operator's
        # choice) and writes other records at those log positions before the follower returns.
        leader = self.start("leader", "--fsync", "everysec")
        follower = self.follower("follower", leader)
        lr = leader.client()
        for i in range(50):
            lr.xadd("s", {"i": str(i)})
        self.assertEqual(lr.execute_command("WAIT", "1", "5000"), 1)
        synced = lr.info("evstore")["log_bytes"]
        for i in range(10):
            lr.xadd("s", {"lost": "x" * (i * 7)})
        self.assertEqual(lr.execute_command("WAIT", "1", "5000"), 1)
        held = lr.info("evstore")["log_bytes"]
        self.assertEqual(follower.stop(), 0)
        self.servers.remove(follower)
        leader.stop(signal.SIGKILL)
        self.servers.remove(leader)
        # the power cut: the leader's unsynced pages are gone (zeros, as preallocated), and
        # its index is rebuilt (the copy in the page cache went with them)
        seg = sorted(glob.glob(os.path.join(leader.data, "log", "*.seg")))[-1]
        base = int(os.path.basename(seg)[:20])
        with open(seg, "r+b") as f:
            f.seek(synced - base)
            f.write(b"\0" * (held - synced))
        shutil.rmtree(os.path.join(leader.data, "index"))
        os.unlink(os.path.join(leader.data, "index.ckpt"))
        again = self.start("leader", "--fsync", "everysec")
        ar = again.client(decode_responses=True)
        self.assertEqual(ar.xlen("s"), 50)
        self.assertIn("did not close cleanly (a crash or a power cut) and opens to lead: it "
                      "begins a new epoch before its next write", self.log())
        self.assertEqual(ar.info("evstore")["epoch"], 1)  # the open syncs nothing ...
        for i in range(20):
            ar.xadd("s", {"after": "y" * (i * 11)})
        self.assertEqual(ar.info("evstore")["epoch"], 2)  # ... the first write fences first
        self.assertIn("epoch 2 begins at log position %d (the last run did not close cleanly)"
                      % synced, self.log())
        self.assertGreater(ar.info("evstore")["log_bytes"], held)
        # the follower holds the 10 lost records where the leader now has others: told to cut
        back = self.follower("follower", again)
        br = self.converged_after_cut(back, again, b"lost", 10)
        self.assertEqual(br.xlen("s"), 70)
        # a clean stop and start begins no epoch
        self.assertEqual(again.stop(), 0)
        self.servers.remove(again)
        third = self.start("leader", "--fsync", "everysec")
        self.assertEqual(third.client().info("evstore")["epoch"], 2)

    def test_idempotent_retries_after_a_failover_append_once(self):
        """An HTTP publish acknowledged by the leader (and confirmed by WAIT), retried with the
        same Idempotency-Key (or the same event id) on the follower promoted after the leader's
        loss, answers the original ID and appends nothing: the keys travel in the log with
        their entries. A follower refuses the publish itself as read-only."""
        leader = self.start("leader")
        f = self.follower("f", leader)
        first = http_req(leader, "POST", "/streams/s/events", {"type": "a", "payload": 1},
                         {"Idempotency-Key": "k1"})
        by_id = http_req(leader, "POST", "/streams/s/events", {"type": "b", "id": "evt-9"})
        self.assertEqual((first[0], by_id[0]), (201, 201))
        self.assertEqual(leader.client().execute_command("WAIT", "1", "5000"), 1)
        st, body, _ = http_req(f, "POST", "/streams/s/events", {"type": "a", "payload": 1},
                               {"Idempotency-Key": "k1"})
        self.assertEqual((st, body["code"]), (403, "readonly"))
        leader.stop(signal.SIGKILL)
        self.servers.remove(leader)
        self.assertEqual(f.client().execute_command("REPLICAOF", "NO", "ONE"), b"OK")
        st, body, r = http_req(f, "POST", "/streams/s/events", {"type": "a", "payload": 1},
                               {"Idempotency-Key": "k1"})
        self.assertEqual((st, body), (201, first[1]))
        self.assertEqual(r.getheader("Idempotent-Replayed"), "true")
        st, body, _ = http_req(f, "POST", "/streams/s/events", {"type": "b", "id": "evt-9"})
        self.assertEqual((st, body), (201, by_id[1]))
        self.assertEqual(f.client().xlen("s"), 2)

    def test_two_promotions_to_the_same_epoch_are_told_apart(self):
        leader = self.start("leader")
        f1 = self.follower("f1", leader)
        f2 = self.follower("f2", leader)
        lr = leader.client(decode_responses=True)
        for i in range(100):
            lr.xadd("s", {"i": str(i)})
        self.assertEqual(lr.execute_command("WAIT", "2", "5000"), 2)
        leader.stop(signal.SIGKILL)
        self.servers.remove(leader)
        # a split: both followers are promoted, each to epoch 2, each with its own UUID
        r1, r2 = f1.client(decode_responses=True), f2.client(decode_responses=True)
        self.assertEqual(r1.execute_command("REPLICAOF", "NO", "ONE"), "OK")
        self.assertEqual(r2.execute_command("REPLICAOF", "NO", "ONE"), "OK")
        self.assertEqual(r1.info("evstore")["epoch"], 2)
        self.assertEqual(r2.info("evstore")["epoch"], 2)
        r1.xadd("s", {"from": "f1"})
        for i in range(3):
            r2.xadd("s", {"f2-only": str(i)})
        # f2 is told to follow f1: same epoch number, different history from where epoch 2
        # began: it cuts everything it wrote as a leader and converges on f1
        r2.close()
        r2 = self.rejoin_at_runtime(f2, f1, b"f2-only", 3)
        self.assertEqual(r2.xlen("s"), 101)
        with open(os.path.join(f1.data, "EPOCHS"), "rb") as a, open(os.path.join(f2.data, "EPOCHS"), "rb") as b:
            self.assertEqual(a.read(), b.read())
        self.assertIn("two promotions", self.log())

    def test_a_diverged_follower_behind_retention_keeps_its_old_store(self):
        """Two followers promoted in a split; the first writes past its retention, so that its
        log's start passes the point where the second's history parts from its own. The
        second, told to follow the first, cannot cut there (that part of the log is gone): it
        copies the first's store, and keeps its old one, which holds writes of its own that
        exist nowhere else. (Mutation-checked: removing every old store fails this.)"""
        leader = self.start("leader")
        f1 = self.follower("f1", leader, "--retention-max-entries", "100")
        f2 = self.follower("f2", leader)
        lr = leader.client()
        for i in range(50):
            lr.xadd("s", {"i": str(i)})
        self.assertEqual(lr.execute_command("WAIT", "2", "5000"), 2)
        leader.stop(signal.SIGKILL)
        self.servers.remove(leader)
        r1, r2 = f1.client(), f2.client()
        self.assertEqual(r1.execute_command("REPLICAOF", "NO", "ONE"), b"OK")
        self.assertEqual(r2.execute_command("REPLICAOF", "NO", "ONE"), b"OK")
        for i in range(3):
            r2.xadd("s", {"f2-only": str(i)})
        self.fill_past_retention(r1)
        self.assertEqual(r2.execute_command("REPLICAOF", "127.0.0.1", str(f1.port)), b"OK")
        r2.close()
        self.wait_role(f2, "slave")
        self.caught_up(f1, f2)
        self.same_segments(f1, f2)
        self.assertEqual(f2.client().xrange("s"), r1.xrange("s"))
        # restarted in the same process as a follower of f1: its command line names f1 only
        # (before, each REPLICAOF appended one more --replica-of to it)
        args = open("/proc/%d/cmdline" % f2.proc.pid, "rb").read().split(b"\0")
        self.assertEqual([args[i + 1] for i, a in enumerate(args) if a == b"--replica-of"],
                         [b"127.0.0.1:%d" % f1.port])
        log = self.log()
        self.assertIn("parts from the leader's at", log)
        self.assertRegex(log, r"the old store is kept in .*f2/\.replaced-\d+")
        kept = glob.glob(os.path.join(f2.data, ".replaced-*"))
        self.assertEqual(len(kept), 1)
        own = 0
        for seg in glob.glob(os.path.join(kept[0], "log", "*.seg")):
            with open(seg, "rb") as f:
                own += f.read().count(b"f2-only")
        self.assertEqual(own, 3)

    def rejoin_at_runtime(self, node, leader, cut_marker, cut_count):
        """node follows leader (REPLICAOF at runtime), cuts its own writes (cut_count entries
        holding cut_marker, kept in one .diverged file) and converges byte for byte."""
        nr = node.client(decode_responses=True)
        self.assertEqual(nr.execute_command("REPLICAOF", "127.0.0.1", str(leader.port)), "OK")
        nr.close()
        self.wait_role(node, "slave")
        return self.converged_after_cut(node, leader, cut_marker, cut_count)

    def converged_after_cut(self, node, leader, cut_marker, cut_count):
        """node, following leader, cut the part of its log that was not the leader's
        (cut_count entries holding cut_marker, kept in one .diverged file) and converged byte
        for byte."""
        lr = leader.client(decode_responses=True)
        self.assertEqual(lr.execute_command("WAIT", "1", "10000"), 1)
        self.caught_up(leader, node)
        self.same_segments(leader, node)
        nr = node.client(decode_responses=True)
        self.assertEqual(nr.xrange("s"), lr.xrange("s"))
        self.assertEqual(nr.info("evstore")["epoch"], lr.info("evstore")["epoch"])
        kept = glob.glob(os.path.join(node.data, "log", "*.diverged"))
        self.assertEqual(len(kept), 1, kept)
        with open(kept[0], "rb") as f:
            self.assertEqual(f.read().count(cut_marker), cut_count)
        # INFO counts what the log keeps aside (the open after the cut counted it)
        aside = kept + glob.glob(os.path.join(node.data, "log", "*.torn"))
        info = nr.info("evstore")
        self.assertEqual((info["set_aside_files"], info["set_aside_bytes"]),
                         (len(aside), sum(os.path.getsize(f) for f in aside)))
        return nr

    def wait_role(self, node, role, timeout=20):
        """After REPLICAOF HOST PORT the node stops and starts again (same pid, same ports)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                if node.client(decode_responses=True).execute_command("ROLE")[0] == role:
                    return
            except (redis.ConnectionError, redis.TimeoutError):
                pass
            self.assertIsNone(node.proc.poll(), "the node exited: %s" % self.log()[-2000:])
            time.sleep(0.05)
        self.fail("%d never became %s" % (node.port, role))

    def test_replicaof_at_runtime_switches_both_ways(self):
        a = self.start("a")
        b = self.start("b")
        ar, br = a.client(decode_responses=True), b.client(decode_responses=True)
        for i in range(200):
            ar.xadd("s", {"i": str(i)})
        for bad, why in ((("127.0.0.1", "nope"), "not an integer"), (("127.0.0.1", "0"), "out of range"),
                         (("", "1"), "Invalid master address")):
            with self.assertRaisesRegex(redis.ResponseError, why):
                br.execute_command("REPLICAOF", *bad)
        pid = b.proc.pid
        self.assertEqual(br.execute_command("REPLICAOF", "127.0.0.1", str(a.port)), "OK")
        br.close()
        self.wait_role(b, "slave")
        self.assertEqual(b.proc.pid, pid)
        self.caught_up(a, b)
        self.same_segments(a, b)
        br = b.client(decode_responses=True)
        self.assertEqual(br.xlen("s"), 200)
        with self.assertRaisesRegex(redis.ReadOnlyError, "read only replica"):
            br.xadd("s", {"no": "write"})
        self.assertEqual(br.execute_command("REPLICAOF", "127.0.0.1", str(a.port)),
                         "OK Already connected to specified master")
        # the roles swap: b leads (a new epoch); a, still leading too, takes two writes that
        # b never sees; told to follow b at runtime, a cuts them (kept aside) and converges
        self.assertEqual(br.execute_command("REPLICAOF", "NO", "ONE"), "OK")
        br.xadd("s", {"from": "b"})
        ar.xadd("s", {"a": "diverged"})
        ar.xadd("s", {"a": "diverged"})
        ar.close()
        self.rejoin_at_runtime(a, b, b"diverged", 2)
        log = self.log()
        self.assertIn("stopping to start again as its follower (was leading)", log)
        self.assertIn("kept in log/*.diverged", log)

    def test_a_copied_store_that_led_twice_is_told_apart(self):
        """A cleanly stopped store copied (cp -r), both copies started as leaders and written
        to, then one told to follow the other: they share the store ID and every epoch, so the
        lineage check sees one history. The leader's CHECK (the CRC of its last 4 KiB before
        the follower's end) differs from the follower's own bytes there: the follower appends
        nothing, copies the leader's store, and keeps its own aside whole. Once with entries
        whose IDs would have fitted (the follower's written first: before CHECK its log took
        the leader's next record and the copies' divergence went unseen), once with a
        follower's ID above the leader's. (Mutation-checked: without CHECK, the first case
        converges to a log that is not the leader's.)"""
        for case, ids in (("fit", None), ("above", "99999999999999-0")):
            a = self.start("a-" + case)
            ar = a.client(decode_responses=True)
            for i in range(3):
                ar.xadd("s", {"common": str(i)})
            self.assertEqual(a.stop(), 0)
            self.servers.remove(a)
            bdata = os.path.join(self.dir, "b-" + case)
            shutil.copytree(a.data, bdata)
            b = self.start("b-" + case)
            br = b.client(decode_responses=True)
            br.xadd("s", {"only": "b"}, id=ids or "*")
            mine = br.xrange("s")
            time.sleep(0.01)  # the leader's entries come later: their IDs fit after b's
            a = self.start("a-" + case)
            ar = a.client(decode_responses=True)
            ar.xadd("s", {"only": "a"})
            ar.xadd("s", {"only": "a2"})
            self.assertEqual(br.execute_command("REPLICAOF", "127.0.0.1", str(a.port)), "OK")
            br.close()
            self.wait_role(b, "slave")
            self.assertEqual(ar.execute_command("WAIT", "1", "20000"), 1, case)
            self.caught_up(a, b)
            self.assertEqual(b.client(decode_responses=True).xrange("s"), ar.xrange("s"), case)
            self.same_segments(a, b)
            asides = glob.glob(os.path.join(b.data, ".replaced-*"))
            self.assertEqual(len(asides), 1, case)
            out = subprocess.run([test_server.EVSTORE, "dump", "--data", asides[0], "s"],
                                 capture_output=True, text=True)
            self.assertEqual([json.loads(l)["id"] for l in out.stdout.splitlines()],
                             [e[0] for e in mine], out.stderr)
            self.assertIn("are not the leader's, though the two share a store ID", self.log())
            self.assertNotIn("does not continue this store's log", self.log())
            self.stop_and_verify(b)
            self.assertEqual(a.stop(), 0)
            self.servers.remove(a)

    def test_a_node_told_to_follow_itself_says_so(self):
        """REPLICAOF naming the node's own address (by 127.0.0.1 or by localhost): it
        becomes a follower, as told, whose link is refused with a reason that names the
        mistake (the connection's peer is its own link's socket: exact, no address guessing)
        rather than "this node is a follower"; REPLICAOF NO ONE makes it lead again, its
        entries whole and writable."""
        a = self.start("a")
        ar = a.client(decode_responses=True)
        ar.xadd("s", {"i": "0"})
        for host in ("127.0.0.1", "localhost"):
            self.assertEqual(ar.execute_command("REPLICAOF", host, str(a.port)), "OK")
            ar.close()
            self.wait_role(a, "slave")
            ar = a.client(decode_responses=True)
            deadline = time.time() + 10
            while "%s:%d down: the leader says: ERR this is the follower's own address" % (
                    host, a.port) not in self.log() and time.time() < deadline:
                time.sleep(0.05)
            self.assertIn("a node cannot replicate from itself", self.log())
        self.assertNotIn("this node is a follower: replicate from its leader", self.log())
        self.assertEqual(ar.execute_command("REPLICAOF", "NO", "ONE"), "OK")
        self.wait_role(a, "master")
        ar = a.client(decode_responses=True)
        ar.xadd("s", {"i": "1"})
        self.assertEqual(ar.xlen("s"), 2)

class Links(Base):
    def writer(self, server, stop, key="s"):
        def run():
            c = server.client()
            while not stop.is_set():
                p = c.pipeline(transaction=False)
                for i in range(20):
                    p.xadd(key, {"pad": "x" * 300})
                p.execute()
                time.sleep(0.005)
        t = threading.Thread(target=run)
        t.start()
        return t

    def test_link_cut_and_stalled_mid_stream(self):
        leader = self.start("leader")
        proxy = Proxy(leader.port)
        self.addCleanup(proxy.close)
        follower = self.start("follower", "--replica-of", "127.0.0.1:%d" % proxy.port)
        stop = threading.Event()
        t = self.writer(leader, stop)
        time.sleep(0.5)
        for _ in range(3):  # cut mid-stream, three times
            self.assertGreaterEqual(proxy.cut(), 1)
            time.sleep(0.4)
        proxy.stall(True)   # bytes held both ways, sockets open: no heartbeat gets through
        time.sleep(8)       # the follower gives up after 5 s of silence (checked each second)
        proxy.stall(False)
        time.sleep(0.5)
        stop.set()
        t.join()
        self.caught_up(leader, follower, timeout=60)
        self.same_segments(leader, follower)
        self.assertEqual(follower.client().xlen("s"), leader.client().xlen("s"))
        log = self.log()
        self.assertIn("the leader closed the connection", log)
        self.assertIn("no data or heartbeat from the leader for 5 s", log)

    def test_a_follower_on_a_slow_link_left_behind_by_retention_is_dropped(self):
        """A follower on a link slower than the leader's writes falls behind the leader's
        retention while connected: the leader drops that link (its next frame is gone) and
        keeps serving; the follower, on a fast link again, copies the store and converges.
        Dropping it from a batch's shipping pass (each follower in turn) freed the follower
        before the pass read its next one: ASan's heap-use-after-free (the server's log)."""
        leader = self.start("leader", "--retention-max-entries", "2000")
        lr = leader.client()
        proxy = Proxy(leader.port)
        self.addCleanup(proxy.close)
        follower = self.start("follower", "--replica-of", "127.0.0.1:%d" % proxy.port)
        lr.xadd("s", {"a": "b"})
        self.assertEqual(lr.execute_command("WAIT", "1", "5000"), 1)
        proxy.delay = 0.05  # 64 KiB each 50 ms at most: ~1.3 MB/s
        self.fill_past_retention(lr, 40000, 1000)  # ~40 MB, 2 MB of it kept
        deadline = time.time() + 30
        while "stopped streaming" not in self.log() and time.time() < deadline:
            lr.xadd("s", {"pad": "r" * 1000})
            time.sleep(0.01)
        self.assertIn("stopped streaming", self.log())
        self.assertTrue(lr.ping())
        proxy.delay = 0
        self.caught_up(leader, follower, timeout=60)
        self.same_segments(leader, follower)
        self.same_length(lr, follower.client(), "s")

    def test_follower_behind_retention_gets_a_snapshot(self):
        leader = self.start("leader", "--retention-max-entries", "100")
        f = self.follower("f", leader)
        lr = leader.client()
        lr.xadd("s", {"a": "b"})
        lr.xgroup_create("s", "g", id="0")
        self.assertEqual(lr.execute_command("WAIT", "1", "5000"), 1)
        self.assertEqual(f.stop(), 0)
        self.servers.remove(f)
        p = lr.pipeline(transaction=False)
        for i in range(12000):  # 1 MiB segments: several fill and fall out
            p.xadd("s", {"pad": "r" * 400})
        p.execute()
        lr.xreadgroup("g", "c", {"s": ">"}, count=5)
        deadline = time.time() + 20
        while lr.info("evstore")["log_start"] == 0 and time.time() < deadline:
            time.sleep(0.2)
        self.assertGreater(lr.info("evstore")["log_start"], 0)
        with open(os.path.join(f.data, "notes"), "w") as fh:  # not the store's: kept
            fh.write("an operator's file")
        # the follower's log ends below the leader's start: it is sent to take a snapshot,
        # restarts itself, copies the leader's store (as a backup), and follows from its cut
        f = self.follower("f", leader)
        lr.xadd("s", {"after": "snapshot"})
        self.assertEqual(lr.execute_command("WAIT", "1", "20000"), 1)
        # the leader's retention trims the stream to 100 over a few passes, one a second:
        # compare the two once it has done so (its trim records reach the follower too)
        deadline = time.time() + 20
        while lr.xlen("s") > 100 and time.time() < deadline:
            time.sleep(0.2)
        self.assertEqual(lr.xlen("s"), 100)
        self.caught_up(leader, f)
        self.same_segments(leader, f)
        fr = f.client(decode_responses=True)
        self.assertEqual(fr.xrange("s"), leader.client(decode_responses=True).xrange("s"))
        self.assertEqual(fr.xpending("s", "g")["pending"], 5)
        log = self.log()
        self.assertIn("follower sent to take a snapshot", log)
        self.assertIn("copying the leader's store", log)
        # its old log was a prefix of the leader's, all below the leader's start: nothing in
        # it was its own, and it is not kept (retention deleted it on the leader)
        self.assertRegex(log, r"the old store held nothing of its own .*: removed from "
                              r".*f/\.replaced-\d+")
        # ... and it goes before the copy, which then needs room for twice the leader's store
        self.assertLess(log.index("the old store held nothing of its own"),
                        log.index("copying the leader's store"))
        aside = glob.glob(os.path.join(f.data, ".replaced-*"))
        self.assertEqual(len(aside), 1)
        self.assertEqual(os.listdir(aside[0]), ["notes"])
        self.assertEqual(sorted(os.listdir(f.data)),
                         sorted(os.listdir(leader.data) + ["FOLLOWING", os.path.basename(aside[0])]))

    def test_a_follower_whose_folder_is_a_mount_point_takes_a_snapshot(self):
        """A follower's data folder that is itself a mount point (a volume mounted as the data
        folder) takes its leader's snapshot all the same: the copy is made and swapped in
        inside the folder, on its own file system (until session 30 it was made beside the
        folder, on the parent's file system, and the rename into place failed with EBUSY).
        A restore into an empty mount point is refused before anything is written, and says
        to restore into a folder inside it."""
        leader = self.start("leader", "--retention-max-entries", "100")
        data = os.path.join(self.dir, "f")
        os.mkdir(data)
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256m", "tmpfs", data]).returncode:
            self.skipTest("cannot mount a tmpfs here (needs root)")
        try:
            rc = subprocess.run([test_server.EVSTORE, "restore", "--from", self.dir, "--data",
                                 data], capture_output=True, text=True)
            self.assertEqual(rc.returncode, 4)
            self.assertIn("is a mount point", rc.stderr)
            self.assertEqual(os.listdir(data), [])
            f = self.follower("f", leader)
            lr = leader.client()
            lr.xadd("s", {"a": "b"})
            self.assertEqual(lr.execute_command("WAIT", "1", "5000"), 1)
            self.assertEqual(f.stop(), 0)
            self.servers.remove(f)
            self.fill_past_retention(lr)
            f = self.follower("f", leader)
            lr.xadd("s", {"after": "snapshot"})
            self.assertEqual(lr.execute_command("WAIT", "1", "20000"), 1)
            self.caught_up(leader, f)
            self.assertEqual(f.client().xrange("s", count=5), lr.xrange("s", count=5))
            self.same_length(lr, f.client(), "s")
            log = self.log()
            self.assertIn("the leader's store is copied", log)
            self.assertNotIn("copying the leader's store failed", log)
            self.assertEqual(f.stop(), 0)
            self.servers.remove(f)
        finally:
            subprocess.run(["umount", data])

    def test_a_follower_killed_while_it_copies_converges(self):
        """A follower SIGKILLed, or sent SIGTERM, at moments spread over its copy of the
        leader's store (the backup, the restore, the swap into its folder, the removal of its
        old store), then started again, each time told to copy anew: a SIGTERM ends it with
        exit 0 and nothing of the copy left; at the end it is converged, with no staging
        folder or swap journal left, `evstore verify` clean, and the old stores that claimed
        bytes of their own kept whole beside it (those that held none removed)."""
        leader = self.start("leader", "--retention-max-entries", "20000")
        lr = leader.client()
        f = self.follower("f", leader)
        lr.xadd("s", {"a": "b"})
        self.assertEqual(lr.execute_command("WAIT", "1", "5000"), 1)
        self.fill_past_retention(lr, 60000, 1000)
        for k in range(8):
            self.assertEqual(f.stop(), 0)
            self.servers.remove(f)
            _, proc = self.copying(f.data, leader.port, 5 if k % 3 == 2 else 0)
            if k % 2:  # (one sent before serve's handler is in place kills it outright)
                test_server.wait_for_handler(proc.pid, signal.SIGTERM)
            time.sleep(0.012 * k)
            if k % 2:  # a SIGTERM stops the copy cleanly: exit 0, nothing left
                proc.terminate()
                self.assertEqual(proc.wait(timeout=20), 0, "SIGTERM %d" % k)
                self.assertEqual(self.copy_leftovers(f.data), [])
            else:
                proc.kill()
                proc.wait()
            f = self.follower("f", leader)
        lr.xadd("s", {"after": "kills"})
        self.assertEqual(lr.execute_command("WAIT", "1", "30000"), 1)
        self.caught_up(leader, f)
        fr = f.client()
        self.same_length(lr, fr, "s")
        self.assertEqual(fr.xrange("s", count=3), lr.xrange("s", count=3))
        self.assertEqual(fr.xrevrange("s", count=3), lr.xrevrange("s", count=3))
        self.assertEqual(self.copy_leftovers(f.data), [])
        for aside in glob.glob(os.path.join(f.data, ".replaced-*")):
            with open(os.path.join(aside, "SNAPSHOT")) as fh:
                self.assertEqual(fh.read(), "snapshot own 5\n")
            self.assertIn("STORE", os.listdir(aside))
        self.stop_and_verify(f)

    def test_a_stop_signal_during_a_copy_from_a_silent_leader_is_obeyed(self):
        """A follower copying its leader's store (SNAPSHOT) whose leader has gone silent
        (SIGSTOP: the connection is accepted, BACKUP BEGIN never answered) obeys SIGTERM at
        once: exit 0, nothing of the copy left; once the leader runs again, the follower
        starts, copies and converges. (Until session 32 it waited in the kernel for the
        leader's answer, for ever before the snapshot began and up to 60 s after.)"""
        leader, lr, f = self.follower_behind_retention()
        leader.proc.send_signal(signal.SIGSTOP)
        try:
            _, proc = self.copying(f.data, leader.port)
            test_server.wait_for_socket(proc.pid)  # (its listeners come after the copy)
            time.sleep(0.3)  # BACKUP BEGIN sent to the stopped leader, unanswered
            t0 = time.time()
            proc.terminate()
            try:
                rc = proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                self.fail("the follower ran on after SIGTERM")
        finally:
            leader.proc.send_signal(signal.SIGCONT)
        self.assertEqual(rc, 0)
        self.assertLess(time.time() - t0, 5)
        self.assertEqual(self.copy_leftovers(f.data), [])
        self.assertIn("interrupted (a stop signal)", self.log())
        f = self.follower("f", leader)
        lr.xadd("s", {"after": "stop"})
        self.assertEqual(lr.execute_command("WAIT", "1", "20000"), 1)
        self.caught_up(leader, f)
        self.same_length(lr, f.client(), "s")
        self.stop_and_verify(f)

    def test_a_copy_that_cannot_reach_its_leader_is_tried_again(self):
        """A follower that must copy its leader's store (SNAPSHOT) while the leader is down
        keeps trying, with backoff, and logs each failure; once the leader is back on its
        port, the copy succeeds and the follower converges. A SIGTERM between two tries ends
        it at once (exit 0, nothing of a copy left). (Until session 33 `serve` exited 3 at
        the first failure, and the follower stayed down until started again.)"""
        leader, lr, f = self.follower_behind_retention()
        ports = (leader.port, leader.http_port)
        self.assertEqual(leader.stop(), 0)
        self.servers.remove(leader)

        def tries():
            return self.log().count("copying the leader's store failed")

        def wait_for_tries(n, timeout=15):
            deadline = time.time() + timeout
            while tries() < n and time.time() < deadline:
                time.sleep(0.05)
            self.assertGreaterEqual(tries(), n, self.log()[-2000:])

        # a stop between two tries
        before = tries()
        _, proc = self.copying(f.data, ports[0])
        try:
            wait_for_tries(before + 1)
            self.assertIsNone(proc.poll(), "the follower gave up after one failed copy")
            self.assertIn("trying again in 1 s", self.log())
            t0 = time.time()
            proc.terminate()
            self.assertEqual(proc.wait(timeout=10), 0)
            self.assertLess(time.time() - t0, 5)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self.assertEqual(self.copy_leftovers(f.data), [])
        # tries until the leader is back
        before = tries()
        fport, proc = self.copying(f.data, ports[0])
        try:
            wait_for_tries(before + 2)  # 1 s, then 2 s
            self.assertIn("trying again in 2 s", self.log())
            self.assertIsNone(proc.poll())
            leader = Server(leader.data, "--retention-max-entries", "2000").start(ports=ports)
            self.servers.append(leader)
            lr = leader.client()
            lr.xadd("s", {"after": "leader back"})
            deadline = time.time() + 30
            while "the leader's store is copied" not in self.log() and time.time() < deadline:
                self.assertIsNone(proc.poll(), self.log()[-2000:])
                time.sleep(0.1)
            self.assertIn("the leader's store is copied", self.log())
            self.assertEqual(lr.execute_command("WAIT", "1", "20000"), 1)
            xs = lr.xrange("s", count=3)
            fol = redis.Redis(port=fport, socket_timeout=10)
            self.assertEqual(fol.xrange("s", count=3), xs)
            self.same_length(lr, fol, "s")
        finally:
            proc.terminate()
            self.assertEqual(proc.wait(timeout=20), 0)
        subprocess.run([test_server.EVSTORE, "verify", "--data", f.data], check=True,
                       capture_output=True)

    def test_a_stop_signal_while_a_node_restarts_itself_is_obeyed(self):
        """SIGTERM sent as a node stops to restart itself (REPLICAOF HOST PORT here; a
        follower's cut or snapshot copy restarts the same way): whether it lands before the
        loop stops, during the stop, or during the exec, the process exits 0 and does not run
        on. (Until session 30 one that landed after the loop's last turn was lost: the node
        restarted and ran until killed; seen as a 20 s stop timeout under ASan.)"""
        leader = self.start("leader")
        for i in range(12):
            node = Server(os.path.join(self.dir, "n%d" % i)).start()
            node.client().xadd("s", {"i": str(i)})
            c = socket.create_connection(("127.0.0.1", node.port))
            c.sendall(b"REPLICAOF 127.0.0.1 %d\r\n" % leader.port)
            time.sleep(0.001 * i)
            node.proc.send_signal(signal.SIGTERM)
            try:
                rc = node.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                node.proc.kill()
                node.proc.wait()
                self.fail("run %d: the node ran on after SIGTERM" % i)
            finally:
                node.log.close()
                c.close()
            self.assertEqual(rc, 0, "run %d" % i)

    def test_leftovers_of_an_interrupted_copy_are_swept(self):
        """A follower killed while it copied its leader's store leaves, inside its folder, a
        partial backup (.snapshot-<pid>) or a copy not yet swapped in (.new-<pid>, with its
        restore's build folder): the next start, holding the folder's lock, removes them;
        what else is in the folder, and folders of that name beside it, stay. Old stores moved
        aside (.replaced-<time>) that held nothing of their own, or no store at all (empty, a
        marker alone), lose their store entries and go when nothing else is in them. A start
        while a server holds the folder removes nothing. (Mutation-checked: without the sweep,
        or with asides that hold no store left alone, this fails.)"""
        leader = self.start("leader")
        f = self.follower("f", leader)
        self.followers_listed(leader.client(), 1)
        self.assertEqual(f.stop(), 0)
        self.servers.remove(f)
        def folder(path, *files):
            os.mkdir(path)
            for name in files:
                with open(os.path.join(path, name), "w") as fh:
                    fh.write("x")
            return path
        inside = [folder(os.path.join(f.data, name), "seg") for name in
                  (".snapshot-%d" % os.getpid(), ".new-1", ".new-1.restore-AbCdEf")]
        beside = folder(f.data + ".new-1", "STORE")
        kept = folder(os.path.join(f.data, "notes"), "mine")
        # old stores moved aside: one that held nothing of its own loses its store entries
        # (a crash before its removal left it), one with writes of its own stays whole
        nothing_own = folder(os.path.join(f.data, ".replaced-5"), "STORE", "mine")
        own = folder(os.path.join(f.data, ".replaced-6"), "STORE", "SNAPSHOT")
        with open(os.path.join(nothing_own, "SNAPSHOT"), "w") as fh:
            fh.write("snapshot own 0\n")
        # asides that hold no store go whatever their marker says: one a crash left empty
        # (between a swap's end and its removal), one holding a marker alone
        empty = folder(os.path.join(f.data, ".replaced-7"))
        marker = folder(os.path.join(f.data, ".replaced-8"), "SNAPSHOT", "FOLLOWING")
        no_store = folder(os.path.join(f.data, ".replaced-9"), "mine", "SNAPSHOT")
        busy = self.follower("f", leader)
        # a second server on the same folder sweeps nothing: the folder is in use
        again = folder(os.path.join(f.data, ".new-2"), "seg")
        second = Server(f.data, "--replica-of", "127.0.0.1:%d" % leader.port)
        with self.assertRaisesRegex(RuntimeError, "exited with 3"):
            second.start(attempts=1)
        self.assertTrue(os.path.isdir(again))
        self.assertEqual(busy.stop(), 0)
        self.servers.remove(busy)
        f = self.follower("f", leader)
        self.followers_listed(leader.client(), 1)
        for gone in inside + [again, empty, marker]:
            self.assertFalse(os.path.exists(gone), gone)
        self.assertEqual(os.listdir(no_store), ["mine"])
        for stay in (beside, kept):
            self.assertTrue(os.path.isdir(stay), stay)
        self.assertEqual(os.listdir(nothing_own), ["mine"])
        self.assertEqual(sorted(os.listdir(own)), ["SNAPSHOT", "STORE"])
        log = self.log()
        for gone in inside:
            self.assertIn("removed %s, left by an interrupted copy" % gone, log)
        self.assertEqual(f.client().ping(), True)

    def test_a_small_stream_pinning_the_log_is_relocated_on_both(self):
        """A stream written a few times and kept by count, among a busy stream whose entries
        expire by age, is all that keeps the oldest segments: the leader's retention copies
        its live entries to the log's head (a relocation) and deletes those segments; the
        follower applies the same records, deletes the same segments, stays byte-identical
        and reads the stream the same; both verify clean. (Mutation-checked: with relocation
        off, the leader keeps 5 segments.)"""
        leader = self.start("leader", "--retention-max-age", "1s")
        f = self.follower("f", leader)
        lr = leader.client(decode_responses=True)
        lr.xadd("rare", {"type": "t0", "n": "0"})
        lr.execute_command("XRETENTION", "rare", "SET", "MAXAGE", "NONE", "MAXENTRIES", "3")
        p = lr.pipeline(transaction=False)
        for i in range(1, 7):
            for _ in range(1000):  # ~0.4 MiB between two of its entries
                p.xadd("busy", {"pad": "b" * 400})
            p.xadd("rare", {"type": "t%d" % (i % 2), "n": str(i)})
        for _ in range(1000):
            p.xadd("busy", {"pad": "b" * 400})
        p.execute()
        deadline = time.time() + 20
        while lr.xlen("rare") > 3 and time.time() < deadline:
            time.sleep(0.05)
        lr.xgroup_create("rare", "g", id="0")
        lr.xreadgroup("g", "c", {"rare": ">"}, count=1)
        want = (lr.xrange("rare"), lr.xrevrange("rare"), lr.xpending("rare", "g")["pending"])
        self.assertEqual(len(want[0]), 3)
        while lr.info("evstore")["streams_relocated"] == 0 and time.time() < deadline:
            time.sleep(0.2)
        lr.xadd("busy", {"pad": "after"})
        while lr.info("evstore")["segments"] > 2 and time.time() < deadline:
            time.sleep(0.2)
        self.assertLessEqual(lr.info("evstore")["segments"], 2)  # the copies and the head
        self.assertGreaterEqual(lr.info("evstore")["streams_relocated"], 1)
        self.assertEqual((lr.xrange("rare"), lr.xrevrange("rare"),
                          lr.xpending("rare", "g")["pending"]), want)
        self.assertIn("retention: relocated 1 small streams", self.log())
        self.caught_up(leader, f)
        self.same_segments(leader, f)
        fr = f.client(decode_responses=True)
        self.assertEqual((fr.xrange("rare"), fr.xrevrange("rare"),
                          fr.xpending("rare", "g")["pending"]), want)
        self.assertGreater(fr.info("evstore")["log_start"], 0)
        for node in (f, leader):
            self.stop_and_verify(node)


class FollowerDiskFull(Base):
    def test_a_full_disk_stops_the_follower_once_and_a_restart_with_room_catches_up(self):
        """A follower whose disk fills fails its store (it cannot hold the leader's next
        segment): it stops following for good, says so once, keeps serving what it holds, and
        once restarted with room it catches up byte for byte (repl_follower.c W4). Before,
        its store failed while a frame's completion still reported success, and the link was
        made again every 100 ms, forever."""
        mnt = os.path.join(self.dir, "fs")
        os.mkdir(mnt)
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", mnt]).returncode:
            self.skipTest("cannot mount a tmpfs here (needs root)")
        follower = None
        try:
            leader = self.start("leader")
            follower = Server(os.path.join(mnt, "follower"), "--replica-of",
                              "127.0.0.1:%d" % leader.port).start()
            flog = os.path.join(mnt, "server.log")
            lc = leader.client()
            for _ in range(16):  # 16 MB of log for a 12 MiB disk
                p = lc.pipeline(transaction=False)
                for i in range(1000):
                    p.xadd("s", {"pad": "x" * 1000})
                p.execute()
            def flog_text():
                with open(flog, errors="replace") as f:
                    return f.read()
            deadline = time.time() + 15
            while time.time() < deadline and "replication stopped" not in flog_text():
                time.sleep(0.1)
            time.sleep(1.5)  # time for a retry loop to show, had there been one
            log = flog_text()
            self.assertEqual(log.count("replication stopped"), 1, log[-3000:])
            self.assertIn("No space left on device", log)
            self.assertNotIn("retrying", log[log.index("replication stopped"):])
            fc = follower.client(decode_responses=True)
            held = fc.xlen("s")
            self.assertGreater(held, 1000)
            self.assertLess(held, 16000)
            self.assertEqual(fc.xrange("s", count=held),
                             leader.client(decode_responses=True).xrange("s", count=held))
            fc.close()
            follower.stop()  # the store had failed: its exit code says so, nothing to check
            subprocess.run(["mount", "-o", "remount,size=64m", mnt], check=True)
            follower.start()
            self.caught_up(leader, follower)
            self.same_segments(leader, follower)
            self.assertEqual(follower.client().xlen("s"), 16000)
        finally:
            if follower and follower.proc and follower.proc.poll() is None:
                follower.stop(signal.SIGKILL)
            subprocess.run(["umount", mnt])


    def test_a_trim_on_a_full_leader_frees_both_disks(self):
        """Leader and follower on disks of one size, both full: the leader's XTRIM rolls into
        its space reserve and its retention deletes; the follower, mirroring that roll, must
        be able to take its own reserve (its space only returns by following the deletions),
        not fail its store (preparer.c P2)."""
        mnts = []
        for name in ("fl", "ff"):
            m = os.path.join(self.dir, name)
            os.mkdir(m)
            if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", m]).returncode:
                for x in mnts:
                    subprocess.run(["umount", x])
                self.skipTest("cannot mount a tmpfs here (needs root)")
            mnts.append(m)
        servers = []
        try:
            leader = Server(os.path.join(mnts[0], "leader")).start()
            servers.append(leader)
            follower = Server(os.path.join(mnts[1], "follower"), "--replica-of",
                              "127.0.0.1:%d" % leader.port).start()
            servers.append(follower)
            lc = leader.client(decode_responses=True)
            for i in range(20000):
                try:
                    lc.xadd("s", {"n": str(i), "p": "x" * 1000})
                except redis.ResponseError as e:
                    self.assertIn("nothing was written", str(e))
                    break
            else:
                self.fail("the leader's disk never filled")
            self.caught_up(leader, follower)
            n = lc.xlen("s")
            self.assertEqual(lc.xtrim("s", maxlen=10, approximate=False), n - 10)
            deadline = time.time() + 15
            def segs(srv):
                return len(glob.glob(os.path.join(srv.data, "log", "*.seg")))
            while time.time() < deadline and (segs(leader) > 3 or segs(follower) > 3):
                time.sleep(0.1)
            self.assertLessEqual(segs(leader), 3)
            self.assertLessEqual(segs(follower), 3)
            for i in range(300):  # past more rolls on both
                lc.xadd("s", {"n": "after-%d" % i, "p": "x" * 1000})
            self.caught_up(leader, follower)
            self.same_segments(leader, follower)
            self.assertEqual(follower.client(decode_responses=True).xrange("s"), lc.xrange("s"))
            with open(os.path.join(mnts[1], "server.log"), errors="replace") as f:
                flog = f.read()
            self.assertNotIn("replication stopped", flog)
            self.assertIn("the space reserve becomes the next segment", flog)
            for srv in servers:
                self.assertEqual(srv.stop(), 0)
        finally:
            for srv in servers:
                if srv.proc and srv.proc.poll() is None:
                    srv.stop(signal.SIGKILL)
            for m in mnts:
                subprocess.run(["umount", m])


class AckAll(Base):
    def http_post(self, server, stream):
        req = urllib.request.Request("http://127.0.0.1:%d/streams/%s/events" %
                                     (server.http_port, stream),
                                     data=b'{"type":"t","payload":{"k":1}}', method="POST")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def test_a_pipeline_split_while_in_flight_keeps_order(self):
        """Bytes that arrive while a connection's XADDs are in flight switch its reads off
        until they complete (reading_held); they are then read and run in order. The XADDs
        stay in flight here for the follower's acknowledgement (--ack all; on a server with
        no follower the loop commits each turn itself and a read rarely meets one in flight).
        The second half of each pipeline, sent 20 bytes at a time right behind the first,
        arrives in flight; XLEN at its end must wait for every XADD before it.
        (Mutation-checked: with the reads never switched back on, it is never read.)"""
        leader = self.start("leader", "--ack", "all", "--min-replicas", "1")
        self.follower("follower", leader)
        lr = leader.client()
        self.followers_listed(lr, 1)
        s = socket.create_connection(("127.0.0.1", leader.port), timeout=10)
        cmd = b"*5\r\n$4\r\nXADD\r\n$2\r\nsp\r\n$1\r\n*\r\n$1\r\nf\r\n$1\r\nv\r\n"
        tail = cmd * 8 + b"*2\r\n$4\r\nXLEN\r\n$2\r\nsp\r\n"
        for round_ in range(1, 21):
            s.sendall(cmd * 8)
            for i in range(0, len(tail), 20):  # over ~20 ms: across several commits
                s.sendall(tail[i:i + 20])
                time.sleep(0.001)
            got = b""
            while got.count(b"\r\n") < 33:  # 16 bulk replies (two lines each) + ":<n>"
                chunk = s.recv(65536)
                self.assertTrue(chunk, "the server closed the connection")
                got += chunk
            lines = got.split(b"\r\n")
            ids = [lines[k] for k in range(1, 32, 2)]
            self.assertEqual(ids, sorted(ids, key=lambda x: tuple(map(int, x.split(b"-")))))
            self.assertEqual(len(set(ids)), 16)
            self.assertEqual(lines[32], b":%d" % (16 * round_), got)
        s.close()
        self.assertEqual(lr.xlen("sp"), 320)

    def test_a_transaction_without_appends_is_read_by_the_next_command(self):
        """--ack all: an EXEC whose writes are XDEL, XTRIM, DEL or group commands alone (no
        XADD) answers once the followers hold them, so the connection's next command reads
        them, as after the lone command. Before, `MULTI`, `DEL s`, `EXEC`, `EXISTS s` answered
        1, and a stream made by `XGROUP CREATE ... MKSTREAM` in one was `none` to `TYPE`: the
        readers here did not see them yet. (Mutation-checked: without the wait, every round
        reads the old state.)"""
        leader = self.start("leader", "--ack", "all", "--min-replicas", "1")
        self.follower("follower", leader)
        lr = leader.client(decode_responses=True)
        self.followers_listed(lr, 1)
        for round_ in range(5):
            lr.xadd("d", {"f": "v"})
            lr.xadd("x", {"f": "v"}, id="%d-1" % (round_ + 1))
            lr.xadd("t", {"f": "v"})
            for write, read, want in ((("DEL", "d"), ("EXISTS", "d"), 0),
                                      (("XDEL", "x", "%d-1" % (round_ + 1)), ("XLEN", "x"), 0),
                                      (("XTRIM", "t", "MAXLEN", "0"), ("XLEN", "t"), 0),
                                      (("XGROUP", "CREATE", "m%d" % round_, "g", "$", "MKSTREAM"),
                                       ("TYPE", "m%d" % round_), "stream")):
                p = lr.pipeline(transaction=True)
                p.execute_command(*write)
                self.assertIn(p.execute(), ([1], ["OK"]), write)
                self.assertEqual(lr.execute_command(*read), want, (round_, write))
            # inside the transaction too, past an XADD the writer refuses: XDEL finds the
            # stream MKSTREAM made and checks its IDs (on a missing key it answers 0 first)
            p = lr.pipeline(transaction=True)
            p.execute_command("XGROUP", "CREATE", "n%d" % round_, "g", "$", "MKSTREAM")
            p.execute_command("XADD", "n%d" % round_, "MAXLEN", "5", "0-0", "f", "v")
            p.execute_command("XDEL", "n%d" % round_, "3-x")
            res = p.execute(raise_on_error=False)
            self.assertEqual(res[0], "OK")
            self.assertIn("greater than 0-0", str(res[1]))
            self.assertIn("Invalid stream ID", str(res[2]), res)

    def test_readers_see_only_what_the_followers_hold(self):
        """--ack all: readers on the leader see an entry only once --min-replicas followers
        have fsynced it (DESIGN.md 7; the store's visibility cap). An XADD the stalled follower
        does not confirm is durable here and answered -NOREPLICAS, and stays out of XLEN,
        XRANGE, XREADGROUP, a blocked XREAD and the HTTP API until the follower has it.
        (Mutation-checked: with the cap never set, XLEN counts it at once.)"""
        leader = self.start("leader", "--ack", "all", "--min-replicas", "1",
                            "--ack-timeout", "400")
        proxy = Proxy(leader.port)
        self.addCleanup(proxy.close)
        self.start("follower", "--replica-of", "127.0.0.1:%d" % proxy.port)
        lr = leader.client(decode_responses=True)
        self.followers_listed(lr, 1)
        first = [lr.xadd("s", {"i": str(i)}) for i in range(5)]
        def held():  # bytes written here that readers wait for: none once the follower has them
            deadline = time.time() + 10
            while int(lr.info("replication")["repl_held_bytes"]) and time.time() < deadline:
                time.sleep(0.02)
            return int(lr.info("replication")["repl_held_bytes"])

        lr.xgroup_create("s", "g", id="$")  # its record too is visible once replicated
        self.assertEqual(held(), 0)
        self.assertEqual(lr.xlen("s"), 5)
        woke = []
        blocked = threading.Thread(target=lambda: woke.append(
            leader.client(decode_responses=True).xread({"s": first[-1]}, block=10000)))
        blocked.start()
        time.sleep(0.2)
        proxy.stall(True)
        try:
            with self.assertRaisesRegex(redis.ResponseError, "acknowledged the write within 400 ms"):
                lr.xadd("s", {"i": "held"})
            self.assertEqual(lr.xlen("s"), 5)
            self.assertEqual([e[0] for e in lr.xrange("s")], first)
            self.assertEqual([e[0] for e in lr.xrevrange("s", count=1)], first[-1:])
            self.assertIsNone(lr.xreadgroup("g", "c", {"s": ">"}, count=10) or None)
            with urllib.request.urlopen("http://127.0.0.1:%d/streams/s/events?reverse=1&limit=50"
                                        % leader.http_port, timeout=10) as r:
                self.assertEqual(len(json.loads(r.read())["events"]), 5)
            self.assertGreater(int(lr.info("replication")["repl_held_bytes"]), 0)
            self.assertTrue(blocked.is_alive())  # the blocked XREAD is not woken by it
        finally:
            proxy.stall(False)
        deadline = time.time() + 10
        while lr.xlen("s") < 6 and time.time() < deadline:
            time.sleep(0.02)
        self.assertEqual(lr.xlen("s"), 6)  # the follower has it now
        blocked.join(10)
        self.assertEqual(woke[0][0][1][0][1], {"i": "held"})
        got = lr.xreadgroup("g", "c", {"s": ">"}, count=10)
        self.assertEqual([e[1] for e in got[0][1]], [{"i": "held"}])
        self.assertEqual(held(), 0)

    def test_a_follower_shows_no_more_than_its_leader(self):
        """A follower is sent each batch before the leader's readers see it (before its sync;
        under --ack all before the followers' acknowledgements), and shows it only once the
        leader's SHOWN says they do: a follower never serves an event the leader holds back.
        (Mutation-checked: with SHOWN ignored, the follower counts the held entry at once.)"""
        leader = self.start("leader", "--ack", "all", "--min-replicas", "2",
                            "--ack-timeout", "400")
        proxy = Proxy(leader.port)
        self.addCleanup(proxy.close)
        near = self.follower("near", leader)
        self.start("far", "--replica-of", "127.0.0.1:%d" % proxy.port)
        lr = leader.client(decode_responses=True)
        nr = near.client(decode_responses=True)
        self.followers_listed(lr, 2)
        for i in range(5):
            lr.xadd("s", {"i": str(i)})
        self.assertEqual(lr.execute_command("WAIT", "2", "5000"), 2)
        deadline = time.time() + 10
        while nr.xlen("s") < 5 and time.time() < deadline:
            time.sleep(0.02)
        self.assertEqual(nr.xlen("s"), 5)
        proxy.stall(True)
        try:
            with self.assertRaisesRegex(redis.ResponseError, "acknowledged the write within 400 ms"):
                lr.xadd("s", {"i": "held"})
            end = lr.info("evstore")["log_bytes"]
            deadline = time.time() + 10
            while nr.execute_command("ROLE")[4] < end and time.time() < deadline:
                time.sleep(0.02)
            self.assertGreaterEqual(nr.execute_command("ROLE")[4], end)  # near holds it ...
            self.assertEqual(lr.xlen("s"), 5)  # ... the leader's readers do not see it ...
            self.assertEqual(nr.xlen("s"), 5)  # ... nor do near's
            self.assertEqual(len(nr.xrange("s")), 5)
            self.assertIsNone(nr.xread({"s": "0-0"}, count=10, block=300)[0][1][5:] or None)
        finally:
            proxy.stall(False)
        deadline = time.time() + 10
        while nr.xlen("s") < 6 and time.time() < deadline:
            time.sleep(0.02)
        self.assertEqual(lr.xlen("s"), 6)
        self.assertEqual(nr.xrange("s")[-1][1], {"i": "held"})

    def test_a_client_reads_its_own_deletes_and_trims(self):
        """--ack all: XDEL, XTRIM, DEL are answered once durable here, and readers see them
        once the follower holds them; the same client's next command waits for that
        (repl_fence), in a pipeline and inside MULTI/EXEC. XGROUP CREATE MKSTREAM, and an XREADGROUP that
        dead-letters, are answered once readers see what they wrote to a stream. (Mutation-checked: without the fence the XRANGE right
        behind an XDEL still returns the deleted entry; without the waits, EXISTS is 0 and the dead letter is not there yet.)"""
        leader = self.start("leader", "--ack", "all", "--min-replicas", "1")
        self.follower("follower", leader)
        lr = leader.client(decode_responses=True)
        self.followers_listed(lr, 1)
        for round_ in range(20):
            key = "d%d" % round_
            ids = [lr.xadd(key, {"i": str(i)}) for i in range(4)]
            p = lr.pipeline(transaction=False)
            p.xdel(key, ids[0])
            p.xrange(key)
            p.xtrim(key, maxlen=2, approximate=False)
            p.xlen(key)
            deleted, rest, trimmed, n = p.execute()
            self.assertEqual((deleted, [e[0] for e in rest], trimmed, n), (1, ids[1:], 1, 2))
            p = lr.pipeline(transaction=True)
            p.xdel(key, ids[2])
            p.xlen(key)
            p.delete("other%d" % round_)
            p.exists(key)
            self.assertEqual(p.execute(), [1, 1, 0, 1])
            p = lr.pipeline(transaction=False)
            p.delete(key)
            p.exists(key)
            self.assertEqual(p.execute(), [1, 0])
            p = lr.pipeline(transaction=False)  # a stream XGROUP CREATE MKSTREAM makes
            p.xgroup_create("g" + key, "g", id="$", mkstream=True)
            p.exists("g" + key)
            p.xreadgroup("g", "c", {"g" + key: ">"}, count=1)
            p.xinfo_groups("g" + key)
            ok, exists, got, groups = p.execute()
            self.assertEqual((ok, exists, got, len(groups)), (True, 1, [], 1))
            j = lr.xadd("j" + key, {"type": "poison"})  # dead-lettering: the reply waits too
            lr.execute_command("XGROUP", "CREATE", "j" + key, "w", "0", "MAXDELIVERIES", "1")
            lr.xreadgroup("w", "c", {"j" + key: ">"})
            p = lr.pipeline(transaction=False)
            p.xreadgroup("w", "c", {"j" + key: "0"})  # the 2nd delivery: dead-lettered
            p.xrange("j" + key + ":dlq")
            p.xclaim("j" + key, "w", "c2", 0, [j])
            _, dl, claimed = p.execute()
            self.assertEqual(([f["dlq-source-id"] for _, f in dl], claimed), ([j], []))

    def test_a_flapping_link_under_ack_all(self):
        """--ack all with retention, a consumer group and a link stalled or cut at random for
        8 s: no client error but NOREPLICAS, every client reads its own deletes, every XADD
        answered with an ID is on the follower afterwards, and once the link is steady the
        leader holds nothing back from readers (repl_held_bytes 0)."""
        leader = self.start("leader", "--ack", "all", "--min-replicas", "1", "--ack-timeout",
                            "300", "--retention-max-entries", "200", "--segment-bytes", "1m")
        proxy = Proxy(leader.port)
        self.addCleanup(proxy.close)
        follower = self.start("follower", "--replica-of", "127.0.0.1:%d" % proxy.port)
        lr = leader.client(decode_responses=True)
        self.followers_listed(lr, 1)
        stop = threading.Event()
        errors, acked = [], {}

        def writer(key):
            c = leader.client(decode_responses=True)
            while not stop.is_set():
                try:
                    ids = []
                    for i in range(5):
                        try:
                            ids.append(c.xadd(key, {"i": str(i), "pad": "x" * (40 * i)}))
                        except redis.ResponseError as e:
                            if "NOREPLICAS" not in str(e):
                                raise
                    acked.setdefault(key, []).extend(ids[1:])
                    if ids:
                        p = c.pipeline(transaction=False)
                        p.xdel(key, ids[0])
                        p.xrange(key, ids[0], ids[0])
                        if p.execute()[1]:
                            errors.append("%s: its own XDEL of %s not seen" % (key, ids[0]))
                except Exception as e:  # noqa: BLE001 - reported below
                    errors.append("%s: %r" % (key, e))
                    return

        def consumer():
            c = leader.client(decode_responses=True)
            for k in range(3):
                c.xgroup_create("w%d" % k, "g", id="0", mkstream=True)
            while not stop.is_set():
                try:
                    got = c.xreadgroup("g", "c", {"w0": ">", "w1": ">", "w2": ">"}, count=50,
                                       block=100)
                    for key, entries in got or []:
                        if entries:
                            c.xack(key, "g", *[e[0] for e in entries])
                except Exception as e:  # noqa: BLE001
                    errors.append("consumer: %r" % e)
                    return

        threads = [threading.Thread(target=consumer)] + \
            [threading.Thread(target=writer, args=("w%d" % k,)) for k in range(3)]
        for t in threads:
            t.start()
        rnd = __import__("random").Random(7)
        t0 = time.time()
        while time.time() - t0 < 8:
            time.sleep(rnd.uniform(0.5, 1.5))
            if rnd.random() < 0.5:
                proxy.stall(True)
                time.sleep(rnd.uniform(0.2, 1.0))
                proxy.stall(False)
            else:
                proxy.cut()
        stop.set()
        for t in threads:
            t.join(30)
            self.assertFalse(t.is_alive())
        self.assertEqual(errors, [])
        deadline = time.time() + 30
        while int(lr.info("replication")["repl_held_bytes"]) and time.time() < deadline:
            time.sleep(0.05)
        self.assertEqual(int(lr.info("replication")["repl_held_bytes"]), 0)
        self.caught_up(leader, follower)
        fr = follower.client(decode_responses=True)
        def num(i):
            return tuple(map(int, i.split("-")))

        for key, ids in acked.items():  # retention keeps the last 200 of each: those
            have = {e[0] for e in fr.xrange(key)}
            low = min(map(num, have)) if have else None
            kept = [i for i in ids if num(i) >= low] if have else []
            self.assertEqual([i for i in kept if i not in have], [], key)
            self.assertGreater(len(kept), 0, key)

    def test_ack_all(self):
        leader = self.start("leader", "--ack", "all", "--min-replicas", "1",
                            "--ack-timeout", "700")
        lr = leader.client(decode_responses=True)
        with self.assertRaisesRegex(redis.ResponseError, "^NOREPLICAS Not enough good replicas to write"):
            lr.xadd("s", {"a": "refused"})
        self.assertEqual(self.http_post(leader, "s")[0], 503)  # HTTP publishes too
        p = lr.pipeline(transaction=True)  # MULTI/EXEC: refused before anything runs
        p.xadd("s", {"a": "refused"})
        with self.assertRaisesRegex(redis.ResponseError, "NOREPLICAS Not enough good replicas to write"):
            p.execute()
        self.assertEqual(lr.xlen("s"), 0)  # refused before appending
        follower = self.follower("follower", leader)
        self.followers_listed(lr, 1)
        fr = follower.client(decode_responses=True)
        ids = []
        p = lr.pipeline(transaction=False)
        for i in range(200):
            p.xadd("s", {"i": str(i)})
        ids = p.execute()
        # answered only once the follower has fsynced them: it has every one already
        have = {e[0] for e in fr.xrange("s")}
        self.assertEqual([i for i in ids if i not in have], [])
        status, body = self.http_post(leader, "s")
        self.assertEqual(status, 201, body)
        self.assertIn(json.loads(body)["id"], {e[0] for e in fr.xrange("s")})
        p = lr.pipeline(transaction=True)  # EXEC answers once the follower fsynced it all
        for i in range(3):
            p.xadd("tx", {"i": str(i)})
        p.xlen("tx")
        p.xadd("tx", {"i": "3"})
        res = p.execute()
        self.assertEqual(res[3], 3)
        self.assertEqual([e[0] for e in fr.xrange("tx")], res[:3] + res[4:])
        # a stalled follower: the write is durable here but not confirmed
        follower.proc.send_signal(signal.SIGSTOP)
        try:
            t0 = time.time()
            with self.assertRaisesRegex(redis.ResponseError, "acknowledged the write within 700 ms"):
                lr.xadd("s", {"stalled": "1"})
            self.assertGreater(time.time() - t0, 0.6)
            status, body = self.http_post(leader, "s")
            self.assertEqual(status, 503, body)
            self.assertIn("noreplicas", body)
            p = lr.pipeline(transaction=True)
            p.xadd("tx", {"stalled": "1"})
            with self.assertRaisesRegex(redis.ResponseError, "acknowledged the transaction within 700 ms"):
                p.execute()
        finally:
            follower.proc.send_signal(signal.SIGCONT)
        # every entry acknowledged under --ack all survives losing the leader
        confirmed = [lr.xadd("s", {"j": str(j)}) for j in range(50)]
        leader.stop(signal.SIGKILL)
        self.servers.remove(leader)
        p = __import__("subprocess").run([test_server.EVSTORE, "promote", "--server",
                                          "127.0.0.1:%d" % follower.port],
                                         capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 0, p.stderr)
        have = {e[0] for e in fr.xrange("s")}
        self.assertEqual([i for i in ids + confirmed if i not in have], [])


if __name__ == "__main__":
    test_server.EVSTORE = os.path.abspath(sys.argv.pop(1))
    unittest.main(verbosity=2)
