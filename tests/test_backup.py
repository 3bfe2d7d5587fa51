#!/usr/bin/python3
"""test_backup.py — `evstore backup`, `restore` and `verify --backup` on the real binary: online
backups of a real server under write load from several redis-py clients, offline backups,
incremental chains, compression, damaged backups, 10,000 streams, a backup client killed with
SIGKILL. Usage: test_backup.py path/to/evstore"""
import glob
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

import redis

import test_server
from test_server import Server


def run(*args, timeout=300):
    p = subprocess.run([test_server.EVSTORE, *args], capture_output=True, text=True,
                       timeout=timeout)
    return p.returncode, p.stdout + p.stderr


class BackupBase(unittest.TestCase):
    FLAGS = ()

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="evs-backup-")
        self.data = os.path.join(self.dir, "data")
        self.servers = []
        self.srv = self.start(self.data, *self.FLAGS)
        self.r = self.srv.client(decode_responses=True)

    def start(self, data, *flags):
        s = Server(data, *flags).start()
        self.servers.append(s)
        return s

    def tearDown(self):
        for s in self.servers:
            rc = s.stop()
            self.assertIn(rc, (0, -9))
        with open(os.path.join(self.dir, "server.log"), errors="replace") as f:
            log = f.read()
        shutil.rmtree(self.dir, ignore_errors=True)
        self.assertNotIn("Sanitizer", log, log[-3000:])
        self.assertNotIn("runtime error", log, log[-3000:])

    def path(self, name):
        return os.path.join(self.dir, name)

    def backup(self, out, *extra, server=None, ok=True):
        s = server or self.srv
        rc, text = run("backup", "--server", "127.0.0.1:%d" % s.port, "--out", self.path(out),
                       *extra)
        if ok:
            self.assertEqual(rc, 0, text)
        return rc, text

    def restore(self, backup, data, ok=True):
        rc, text = run("restore", "--from", self.path(backup), "--data", self.path(data))
        if ok:
            self.assertEqual(rc, 0, text)
        return rc, text

    def everything(self, r):
        """Every stream's entries and every group's state, as a comparable value."""
        out = {}
        for key in sorted(r.keys("*")):
            groups = []
            for g in r.xinfo_groups(key):
                pend = r.xpending_range(key, g["name"], "-", "+", 1000000)
                groups.append((g["name"], g["last-delivered-id"], g["entries-read"],
                               [(p["message_id"], p["consumer"], p["times_delivered"])
                                for p in pend]))
            out[key] = (r.xrange(key), groups)
        return out


class Online(BackupBase):
    def test_backup_under_load_restores_every_acknowledged_entry(self):
        # groups before the backup: their state is part of the cut
        for i in range(50):
            self.r.xadd("jobs", {"n": str(i)})
        self.r.xgroup_create("jobs", "workers", id="0")
        self.r.xreadgroup("workers", "alice", {"jobs": ">"}, count=20)
        self.r.xack("jobs", "workers", *[e[0] for e in self.r.xrange("jobs", count=5)])
        groups_before = self.everything(self.r)["jobs"][1]

        acked, lock, stop = [], threading.Lock(), threading.Event()

        def writer(k):
            c = self.srv.client(decode_responses=True)
            n = 0
            while not stop.is_set():
                i = c.xadd("load%d" % (n % 3), {"source": "w%d" % k, "n": str(n), "pad": "x" * 300})
                # the time of the acknowledgement, not of the request: one sent before the
                # backup started may be acknowledged after its cut, and be rightly absent
                t = time.time()
                with lock:
                    acked.append((t, "load%d" % (n % 3), i))
                n += 1
            c.close()

        with test_server.workers(writer, 4, stop):
            time.sleep(1.0)
            started = time.time()
            self.backup("b1")
            time.sleep(0.5)
        before = [a for a in acked if a[0] < started]
        self.assertGreater(len(before), 100)
        # groups change after the cut: the restore must not see this
        self.r.xack("jobs", "workers", *[e[0] for e in self.r.xrange("jobs", count=20)])

        self.restore("b1", "r1")
        rs = self.start(self.path("r1"))
        rr = rs.client(decode_responses=True)
        for key in ("load0", "load1", "load2"):
            mine, theirs = rr.xrange(key), self.r.xrange(key)
            self.assertEqual(mine, theirs[:len(mine)], "%s is not a prefix" % key)
            have = {e[0] for e in mine}
            for _, k, i in before:
                if k == key:
                    self.assertIn(i, have, "entry %s %s acknowledged before the backup" % (k, i))
        self.assertEqual(self.everything(rr)["jobs"][1], groups_before)
        self.assertEqual(rr.xrange("jobs"), self.r.xrange("jobs"))
        info = rr.info("evstore")
        self.assertEqual(info["epoch"], 2)  # a restored store starts a new epoch
        self.assertEqual(self.r.info("evstore")["backup_snapshots"], 0)
        rc, text = run("verify", "--data", self.path("r1"))
        self.assertIn(rc, (0, 4), text)  # held by the server: refused (4), else clean

    def test_incremental_chain_restores_like_a_full_backup(self):
        def load(n, tag):
            p = self.r.pipeline(transaction=False)
            for i in range(n):
                p.xadd("s%d" % (i % 4), {"tag": tag, "i": str(i), "pad": "y" * 500})
            p.execute()

        load(3000, "a")  # about 2 MiB: two sealed segments of 1 MiB
        self.backup("full1")
        load(3000, "b")
        self.r.xgroup_create("s1", "g", id="0")
        self.r.xreadgroup("g", "c", {"s1": ">"}, count=7)
        _, t2 = self.backup("inc2", "--incremental-from", self.path("full1"))
        load(3000, "c")
        _, t3 = self.backup("inc3", "--incremental-from", self.path("inc2"), "--compress")
        self.backup("full3")
        self.assertRegex(t2, r"\(([1-9]\d*) shared")
        self.assertRegex(t3, r"\(([1-9]\d*) shared")
        # the incremental backups hold fewer segment files than the full ones
        self.assertLess(len(glob.glob(self.path("inc3/log/*"))),
                        len(glob.glob(self.path("full3/log/*"))))
        for b in ("full1", "inc2", "inc3", "full3"):
            rc, text = run("verify", "--backup", self.path(b))
            self.assertEqual(rc, 0, text)
        self.restore("inc3", "r-inc")
        self.restore("full3", "r-full")
        a = self.start(self.path("r-inc")).client(decode_responses=True)
        b = self.start(self.path("r-full")).client(decode_responses=True)
        self.assertEqual(self.everything(a), self.everything(b))
        self.assertEqual(self.everything(a), self.everything(self.r))
        # the segments below the cut are byte-identical to the server's
        for f in sorted(glob.glob(self.path("r-inc/log/*.seg")))[:-1]:
            with open(f, "rb") as x, open(os.path.join(self.data, "log",
                                                        os.path.basename(f)), "rb") as y:
                self.assertEqual(x.read(), y.read(), f)
        # a chain moved together still restores (parents found beside the child)
        moved = self.path("moved")
        os.mkdir(moved)
        for b in ("full1", "inc2", "inc3"):
            shutil.move(self.path(b), os.path.join(moved, b))
        rc, text = run("restore", "--from", os.path.join(moved, "inc3"), "--data",
                       self.path("r-moved"))
        self.assertEqual(rc, 0, text)
        # a chain missing its parent is refused, nothing written
        shutil.rmtree(os.path.join(moved, "full1"))
        rc, text = run("restore", "--from", os.path.join(moved, "inc3"), "--data",
                       self.path("r-broken"))
        self.assertEqual(rc, 1, text)
        self.assertIn("parent backup", text)
        self.assertFalse(os.path.exists(self.path("r-broken")))

    def test_rate_limit(self):
        """--rate holds the copy to N bytes a second (a lower bound on the time: the limiter
        can only slow a backup down), and the backup is whole. Paced, it asks for the rate's
        5 ms (at least 16 KiB) a READ, one at a time, so that its work comes in slices between
        its pauses, not as 16 MiB bursts (evs_backup_piece, storage/backup.c); at full speed,
        4 MiB a READ."""
        p = self.r.pipeline(transaction=False)
        for i in range(3000):
            p.xadd("s", {"i": str(i), "p": "x" * 1000})
        p.execute()
        rc, text = run("backup", "--server", "127.0.0.1:%d" % self.srv.port, "--rate", "nope",
                       "--out", self.path("bad"))
        self.assertEqual(rc, 2, text)
        self.assertIn("--rate", text)
        port, reads = self.reads_link()
        t0 = time.time()
        rc, text = run("backup", "--server", "127.0.0.1:%d" % port, "--out", self.path("slow"),
                       "--rate", "2m", "--quiet")
        took = time.time() - t0
        self.assertEqual(rc, 0, text)
        with open(os.path.join(self.path("slow"), "MANIFEST")) as f:
            store_bytes = sum(int(l.split()[2]) for l in f if l.startswith("file "))
        self.assertGreater(store_bytes, 3 << 20)
        self.assertGreaterEqual(took, store_bytes / (2 << 20) * 0.9)
        self.assertGreater(len(reads), store_bytes // (16 << 10) - 5)
        self.assertEqual({n for n, _ in reads}, {16 << 10})  # 2 MiB/s x 5 ms < 16 KiB
        self.assertEqual(max(ahead for _, ahead in reads), 0)  # one in flight
        port, reads = self.reads_link()
        rc, text = run("backup", "--server", "127.0.0.1:%d" % port, "--out", self.path("fast"),
                       "--quiet")
        self.assertEqual(rc, 0, text)
        self.assertEqual({n for n, _ in reads}, {4 << 20})
        self.restore("slow", "r")
        rr = self.start(self.path("r")).client(decode_responses=True)
        self.assertEqual(rr.xlen("s"), 3000)

    def reads_link(self):
        """A one-connection proxy to the server that records each BACKUP READ the client sends:
        (bytes asked, READs sent before it and not yet answered). Returns (port, records)."""
        lis = socket.socket()
        lis.bind(("127.0.0.1", 0))
        lis.listen(1)
        records, state = [], {"sent": 0, "answered": 0}
        lock = threading.Lock()

        def pump(a, b, upward):
            buf = bytearray()
            try:
                while True:
                    d = a.recv(1 << 20)
                    if not d:
                        break
                    buf += d
                    while True:
                        got = test_server.resp_parse(buf, 0)
                        if got is None:
                            break
                        v, end = got
                        del buf[:end]
                        with lock:
                            if not upward:
                                state["answered"] += 1
                            elif v[:2] == [b"BACKUP", b"READ"]:
                                records.append((int(v[5]), state["sent"] - state["answered"]))
                            if upward:
                                state["sent"] += 1
                    b.sendall(d)
            except OSError:
                pass
            test_server.shut(a, b)

        def accept():
            c, _ = lis.accept()
            lis.close()
            u = socket.create_connection(("127.0.0.1", self.srv.port))
            threading.Thread(target=pump, args=(c, u, True), daemon=True).start()
            pump(u, c, False)
        threading.Thread(target=accept, daemon=True).start()
        return lis.getsockname()[1], records

    def test_killed_backup_client_leaves_the_server_healthy(self):
        p = self.r.pipeline(transaction=False)
        for i in range(20000):
            p.xadd("big", {"pad": "z" * 1000})
        p.execute()
        proc = subprocess.Popen([test_server.EVSTORE, "backup", "--server",
                                 "127.0.0.1:%d" % self.srv.port, "--out", self.path("killed")],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 20
        while time.time() < deadline and not glob.glob(self.path("killed/log/*")):
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        self.assertFalse(os.path.exists(self.path("killed/MANIFEST")))
        deadline = time.time() + 10
        while self.r.info("evstore")["backup_snapshots"] and time.time() < deadline:
            time.sleep(0.05)
        self.assertEqual(self.r.info("evstore")["backup_snapshots"], 0)
        self.assertTrue(self.r.ping())
        self.r.xadd("big", {"after": "kill"})
        self.assertEqual(self.r.xlen("big"), 20001)
        rc, text = run("verify", "--backup", self.path("killed"))
        self.assertEqual(rc, 1, text)  # visibly incomplete: no manifest
        self.assertIn("MANIFEST", text)

    def test_server_lost_mid_backup_fails_cleanly(self):
        """The server SIGKILLed while a file is being copied (spliced from the socket): the
        backup exits 3 naming the loss and removes everything it wrote."""
        p = self.r.pipeline(transaction=False)
        for i in range(6000):
            p.xadd("big", {"pad": "z" * 1000})
        p.execute()
        proc = subprocess.Popen([test_server.EVSTORE, "backup", "--server",
                                 "127.0.0.1:%d" % self.srv.port, "--out", self.path("lost"),
                                 "--rate", "1m"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.time() + 20
        while time.time() < deadline and not glob.glob(self.path("lost/log/*")):
            time.sleep(0.005)
        time.sleep(0.3)  # well inside the first segment (more than 6 MB at 1 MB/s)
        os.kill(self.srv.proc.pid, signal.SIGKILL)
        out, _ = proc.communicate(timeout=30)
        self.assertEqual(proc.returncode, 3, out)
        self.assertIn("lost the server", out)
        self.assertFalse(os.path.exists(self.path("lost")), out)

    def limited_link(self, limit, stall):
        """A one-connection proxy to the server that passes the server's first `limit` bytes,
        then closes the link (stall=False) or holds it open passing nothing (stall=True, until
        the returned release() is called). Returns (port, release)."""
        lis = socket.socket()
        lis.bind(("127.0.0.1", 0))
        lis.listen(1)
        done = threading.Event()

        def proxy():
            c, _ = lis.accept()
            u = socket.create_connection(("127.0.0.1", self.srv.port))

            def up():
                try:
                    while True:
                        d = c.recv(65536)
                        if not d:
                            break
                        u.sendall(d)
                except OSError:
                    pass
            threading.Thread(target=up, daemon=True).start()
            passed = 0
            while passed < limit:
                d = u.recv(min(65536, limit - passed))
                if not d:
                    break
                c.sendall(d)
                passed += len(d)
            if stall:
                done.wait(60)
            c.shutdown(socket.SHUT_RDWR)
            c.close()
            u.close()
        t = threading.Thread(target=proxy, daemon=True)
        t.start()

        def release():
            done.set()
            t.join(10)
            lis.close()
        return lis.getsockname()[1], release

    def fill(self, n):
        p = self.r.pipeline(transaction=False)
        for i in range(n):
            p.xadd("big", {"pad": "z" * 1000})
        p.execute()

    def test_link_cut_inside_a_reply_fails_cleanly(self):
        """The link closes inside a READ reply's bytes (spliced into the file): the backup
        exits 3 and removes everything it wrote; the server is unharmed."""
        self.fill(12000)
        port, release = self.limited_link((6 << 20) + 12345, stall=False)
        rc, text = run("backup", "--server", "127.0.0.1:%d" % port, "--out", self.path("cut"),
                       timeout=60)
        release()
        self.assertEqual(rc, 3, text)
        self.assertIn("lost the server mid-file", text)
        self.assertFalse(os.path.exists(self.path("cut")), text)
        self.assertEqual(self.r.xlen("big"), 12000)
        self.backup("whole")
        self.assertEqual(run("verify", "--backup", self.path("whole"))[0], 0)

    def test_stalled_link_times_out(self):
        """The link stalls inside a READ reply, open but silent: with --timeout 2 the backup
        gives up (exit 3, the silence named, nothing left) instead of waiting forever, and
        the snapshot it held on the server is released."""
        self.fill(12000)
        rc, text = run("backup", "--server", "127.0.0.1:%d" % self.srv.port, "--timeout", "x",
                       "--out", self.path("bad"))
        self.assertEqual(rc, 2, text)
        port, release = self.limited_link((6 << 20) + 12345, stall=True)
        t0 = time.time()
        rc, text = run("backup", "--server", "127.0.0.1:%d" % port, "--out",
                       self.path("stalled"), "--timeout", "2", timeout=60)
        took = time.time() - t0
        self.assertEqual(rc, 3, text)
        self.assertIn("sent nothing for 2 s", text)
        self.assertGreaterEqual(took, 2)
        self.assertLess(took, 30)
        self.assertFalse(os.path.exists(self.path("stalled")), text)
        # the client's BACKUP END still reaches the server (only replies stall)
        deadline = time.time() + 10
        while self.r.info("evstore")["backup_snapshots"] and time.time() < deadline:
            time.sleep(0.05)
        self.assertEqual(self.r.info("evstore")["backup_snapshots"], 0)
        release()

    def test_a_stop_signal_ends_a_stalled_backup(self):
        """SIGINT or SIGTERM stops a backup at once even while the server is silent: a
        server stopped (SIGSTOP) before it answers BACKUP BEGIN, and a link that stalls
        inside a READ reply; each time exit 3, "interrupted" said, nothing left, and the
        server serves on. (Until session 32 the backup had no stop handling: a signal killed
        it and left the folder; and a wait on the server, done in the kernel, ignored a stop
        until --timeout, or for ever during BEGIN.)"""
        self.fill(12000)
        self.srv.proc.send_signal(signal.SIGSTOP)
        try:
            proc = subprocess.Popen([test_server.EVSTORE, "backup", "--server", "127.0.0.1:%d"
                                     % self.srv.port, "--out", self.path("begin")],
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            test_server.wait_for_socket(proc.pid)
            time.sleep(0.3)  # BACKUP BEGIN sent, unanswered
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=10)
        finally:
            self.srv.proc.send_signal(signal.SIGCONT)
        self.assertEqual(proc.returncode, 3, out)
        self.assertIn("interrupted", out)
        self.assertFalse(os.path.exists(self.path("begin")), out)
        port, release = self.limited_link((6 << 20) + 12345, stall=True)
        proc = subprocess.Popen([test_server.EVSTORE, "backup", "--server", "127.0.0.1:%d" %
                                 port, "--out", self.path("stalled")],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.time() + 20  # until the stall: 6 MB of the first segment landed
        seg = os.path.join(self.path("stalled"), "log")
        while time.time() < deadline and sum(
                os.path.getsize(os.path.join(seg, n)) for n in
                (os.listdir(seg) if os.path.isdir(seg) else [])) < (6 << 20):
            time.sleep(0.02)
        time.sleep(0.3)
        t0 = time.time()
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=10)
        self.assertLess(time.time() - t0, 5)
        release()
        self.assertEqual(proc.returncode, 3, out)
        self.assertIn("interrupted", out)
        self.assertFalse(os.path.exists(self.path("stalled")), out)
        self.assertEqual(self.r.xlen("big"), 12000)
        self.backup("whole")
        self.assertEqual(run("verify", "--backup", self.path("whole"))[0], 0)

    def test_protocol_errors(self):
        with self.assertRaisesRegex(redis.ResponseError, "no such backup snapshot"):
            self.r.execute_command("BACKUP", "READ", "7", "0", "0", "10")
        with self.assertRaisesRegex(redis.ResponseError, "unknown subcommand"):
            self.r.execute_command("BACKUP", "NOPE")
        desc = self.r.execute_command("BACKUP", "BEGIN")
        snap = desc[1]
        with self.assertRaisesRegex(redis.ResponseError, "no such file"):
            self.r.execute_command("BACKUP", "READ", snap, "99", "0", "10")
        self.assertEqual(self.r.execute_command("BACKUP", "READ", snap, "0", "0", "5"), "evsto")
        self.assertEqual(self.r.execute_command("BACKUP", "READ", snap, "0", "1000", "5"), "")
        other = self.srv.client(decode_responses=True)  # K1: not another connection's
        with self.assertRaisesRegex(redis.ResponseError, "no such backup snapshot"):
            other.execute_command("BACKUP", "READ", snap, "0", "0", "5")
        other.close()
        self.assertEqual(self.r.execute_command("BACKUP", "END", snap), "OK")
        self.assertEqual(self.r.info("evstore")["backup_snapshots"], 0)

    def test_the_index_copy_is_read_forward_once(self):
        """backup_cmd.c K6: the server drops the index copy's bytes once a READ has sent them
        (snapshot.c P4), so a READ from below what was sent is refused, never answered with
        zeros; the rest reads on, and a segment may be read again."""
        p = self.r.pipeline(transaction=False)
        for i in range(3000):  # an index of many pages: many streams, many sources
            p.xadd("s%d" % (i % 300), {"source": "agent-%d" % i, "type": "t", "payload": "x"})
        p.execute()
        deadline = time.time() + 10  # the index lags the log: until it has them
        while self.r.info("evstore")["index_lag_bytes"] and time.time() < deadline:
            time.sleep(0.05)
        c = self.srv.client()  # bytes, not text
        desc = c.execute_command("BACKUP", "BEGIN")
        snap = desc[1]
        files = dict(zip(desc[0::2], desc[1::2]))[b"files"]
        names = [f[0] for f in files]
        ix, seg = names.index(b"index/data.mdb"), [f[3] for f in files].index(1)
        size = files[ix][1]
        self.assertGreater(size, 3 * 4096)
        first = c.execute_command("BACKUP", "READ", snap, ix, 0, 8192)
        self.assertEqual(len(first), 8192)
        with self.assertRaisesRegex(redis.ResponseError, "read it forward, once"):
            c.execute_command("BACKUP", "READ", snap, ix, 4096, 4096)
        rest = c.execute_command("BACKUP", "READ", snap, ix, 8192, size)
        self.assertEqual(len(first) + len(rest), size)
        self.assertEqual(first[16:20], b"\xde\xc0\xef\xbe")  # LMDB's magic: the copy itself
        a = c.execute_command("BACKUP", "READ", snap, seg, 0, 4096)
        self.assertEqual(c.execute_command("BACKUP", "READ", snap, seg, 0, 4096), a)
        self.assertEqual(c.execute_command("BACKUP", "END", snap), b"OK")
        c.close()


class Auth(BackupBase):
    FLAGS = ("--requirepass", "s3cret")

    def setUp(self):
        super().setUp()
        self.r = self.srv.client(decode_responses=True, password="s3cret")

    def test_password(self):
        self.r.xadd("s", {"a": "b"})
        rc, text = self.backup("nopass", ok=False)
        self.assertEqual(rc, 3, text)
        self.assertIn("NOAUTH", text)
        rc, text = self.backup("wrong", "--password", "nope", ok=False)
        self.assertEqual(rc, 3, text)
        self.backup("good", "--password", "s3cret")
        self.restore("good", "r")


class Offline(BackupBase):
    def test_offline_backup_refused_while_served_then_works(self):
        self.r.xadd("s", {"a": "b"})
        rc, text = run("backup", "--data", self.data, "--out", self.path("off"))
        self.assertEqual(rc, 4, text)
        self.assertIn("in use", text)
        self.assertFalse(os.path.exists(self.path("off")))
        self.assertEqual(self.srv.stop(), 0)
        self.servers.remove(self.srv)
        rc, text = run("backup", "--data", self.data, "--out", self.path("off"), "--compress")
        self.assertEqual(rc, 0, text)
        self.restore("off", "r")
        rs = self.start(self.path("r"))
        self.assertEqual(rs.client(decode_responses=True).xrange("s")[0][1], {"a": "b"})

    def test_offline_rate_limit(self):
        """--rate holds an offline backup (pieces of 5 ms of the pace, evs_backup_piece) to N
        bytes a second too, uncompressed and compressed, and the backup is whole."""
        p = self.r.pipeline(transaction=False)
        for i in range(3000):
            p.xadd("s", {"i": str(i), "p": "x" * 1000})
        p.execute()
        self.assertEqual(self.srv.stop(), 0)
        self.servers.remove(self.srv)
        for name, extra in (("plain", ()), ("z", ("--compress",))):
            t0 = time.time()
            rc, text = run("backup", "--data", self.data, "--out", self.path(name), "--rate",
                           "2m", "--quiet", *extra)
            took = time.time() - t0
            self.assertEqual(rc, 0, text)
            with open(os.path.join(self.path(name), "MANIFEST")) as f:
                store_bytes = sum(int(l.split()[2]) for l in f if l.startswith("file "))
            self.assertGreater(store_bytes, 3 << 20)
            self.assertGreaterEqual(took, store_bytes / (2 << 20) * 0.9, name)
            self.restore(name, "r-" + name)
            rr = self.start(self.path("r-" + name)).client(decode_responses=True)
            self.assertEqual(rr.xlen("s"), 3000)

    def test_ten_thousand_streams(self):
        p = self.r.pipeline(transaction=False)
        for i in range(10000):
            p.xadd("stream:%05d" % i, {"i": str(i)})
        p.execute()
        self.backup("many")
        self.restore("many", "r")
        rr = self.start(self.path("r")).client(decode_responses=True)
        self.assertEqual(rr.dbsize(), 10000)
        self.assertEqual(rr.xrange("stream:09999")[0][1], {"i": "9999"})

    def test_backup_into_an_empty_mount_point(self):
        """--out an empty folder that is a mount point (a backup volume mounted for it): the
        backup is written into it (until session 30 it was refused as "not an empty folder":
        the emptiness test removed and re-made the folder, which a mount point refuses)."""
        self.r.xadd("s", {"a": "b"})
        mnt = self.path("vol")
        os.mkdir(mnt)
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", mnt]).returncode:
            self.skipTest("cannot mount a tmpfs here (needs root)")
        try:
            self.backup("vol")
            rc, text = run("verify", "--backup", mnt)
            self.assertEqual(rc, 0, text)
            self.restore("vol", "r")
            self.assertEqual(self.backup("vol", ok=False)[0], 4)  # it holds a backup now
        finally:
            subprocess.run(["umount", mnt])

    def test_restore_onto_another_file_system_with_little_room(self):
        """A backup is restored onto another disk: across file systems copy_file_range fails
        (EXDEV, Linux 5.19 on) and the restore must go on with sendfile; and the restored
        store, opened to begin its epoch, must not need room for a space reserve beyond the
        data (a new epoch may use the reserve, preparer.c P2)."""
        p = self.r.pipeline(transaction=False)
        for i in range(6000):
            p.xadd("s%d" % (i % 3), {"i": str(i), "pad": "p" * 1000})
        p.execute()
        want = self.everything(self.r)
        self.backup("b")
        size = sum(os.path.getsize(os.path.join(d, f))
                   for d, _, fs in os.walk(self.path("b")) for f in fs)
        mnt = self.path("fs")
        os.mkdir(mnt)
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%dk" % (size // 1024 + 4096),
                           "tmpfs", mnt]).returncode:
            self.skipTest("cannot mount a tmpfs here (needs root)")
        try:
            rc, text = run("restore", "--from", self.path("b"), "--data", os.path.join(mnt, "r"))
            self.assertEqual(rc, 0, text)
            rc, text = run("verify", "--data", os.path.join(mnt, "r"))
            self.assertEqual(rc, 0, text)
            rs = self.start(os.path.join(mnt, "r"))
            self.assertEqual(self.everything(rs.client(decode_responses=True)), want)
            self.assertEqual(rs.stop(), 0)
            self.servers.remove(rs)
        finally:
            subprocess.run(["umount", mnt])

    def test_a_store_this_process_may_not_write_is_read_and_backed_up(self):
        """The offline tools on a folder they may only read — on a file system mounted
        read-only (as ext4 remounts itself after an error), or as a user with read
        permission alone — open it read-only: dump and verify work, an offline backup copies
        the store as it is on disk (its index copy in $TMPDIR), and the backup restores to
        the same content. Nothing in the folder changes. (Mutation-checked: with LOCK opened
        for writing only, or LMDB's lock file used, this fails.)"""
        p = self.r.pipeline(transaction=False)
        for i in range(3000):
            p.xadd("s%d" % (i % 3), {"type": "t%d" % (i % 5), "pad": "p" * 300})
        p.execute()
        self.r.xgroup_create("s1", "g", id="0")
        self.r.xreadgroup("g", "c", {"s1": ">"}, count=7)
        want = self.everything(self.r)
        self.assertEqual(self.srv.stop(), 0)
        self.servers.remove(self.srv)
        mnt = self.path("ro")
        os.mkdir(mnt)
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", mnt]).returncode:
            self.skipTest("cannot mount a tmpfs here (needs root)")
        try:
            ro = os.path.join(mnt, "data")
            shutil.copytree(self.data, ro)
            os.chmod(mnt, 0o755)
            os.chmod(self.dir, 0o755)
            out = self.path("out")
            os.mkdir(out)
            os.chmod(out, 0o777)
            def state(folder):
                return sorted((os.path.relpath(os.path.join(d, f), folder),
                               os.stat(os.path.join(d, f)).st_mtime_ns,
                               os.path.getsize(os.path.join(d, f)))
                              for d, _, fs in os.walk(folder) for f in fs)
            before = state(ro)
            as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                         test_server.EVSTORE]
            cases = (("user", as_nobody, "Permission denied"),
                     ("rofs", [test_server.EVSTORE], "Read-only file system"))
            for name, cmd, why in cases:
                if name == "rofs":
                    self.assertEqual(
                        subprocess.run(["mount", "-o", "remount,ro", mnt]).returncode, 0)
                with self.subTest(name):
                    def tool(*args):
                        p = subprocess.run(cmd + list(args), capture_output=True, text=True,
                                           timeout=120)
                        return p.returncode, p.stdout + p.stderr
                    rc, text = tool("verify", "--data", ro)
                    self.assertEqual(rc, 0, text)
                    self.assertIn("0 problems", text)
                    self.assertNotIn("rebuilding", text)  # the store's own index, read as is
                    rc, text = tool("dump", "--data", ro, "s2")
                    self.assertEqual(rc, 0, text)
                    self.assertEqual(len(text.splitlines()), 1000)
                    bk = os.path.join(out, name)
                    rc, text = tool("backup", "--data", ro, "--out", bk)
                    self.assertEqual(rc, 0, text)
                    self.assertIn(why + "; backing up the store as it is on disk, read-only",
                                  text)
                    rc, text = run("verify", "--backup", bk)
                    self.assertEqual(rc, 0, text)
                    rc, text = run("restore", "--from", bk, "--data", self.path("r-" + name))
                    self.assertEqual(rc, 0, text)
                    rs = self.start(self.path("r-" + name))
                    self.assertEqual(self.everything(rs.client(decode_responses=True)), want)
                    self.assertEqual(rs.stop(), 0)
                    self.servers.remove(rs)
                    self.assertEqual(state(ro), before)
            # and a server, which must write, says why it cannot
            p = subprocess.run([test_server.EVSTORE, "serve", "--data", ro, "--http-port", "0",
                                "--port", str(test_server.free_port())],
                               capture_output=True, text=True, timeout=30)
            self.assertNotEqual(p.returncode, 0)
            self.assertIn("Read-only file system", p.stderr)
        finally:
            subprocess.run(["umount", mnt])

    def test_a_killed_restores_folder_goes_a_running_ones_stays(self):
        """Folders <target>.restore-XXXXXX: one whose owner.lock nothing holds (its restore was
        SIGKILLed) is removed by the next restore into that target; one whose lock is held (a
        restore still running) and one without the file (being made) are left alone."""
        import fcntl
        self.r.xadd("s", {"a": "b"})
        self.backup("b")
        target = self.path("r")
        dead, live, young = (target + ".restore-" + x for x in ("AAAAAA", "BBBBBB", "CCCCCC"))
        for d in (dead, live, young):
            os.mkdir(d)
            open(os.path.join(d, "00000000000000000000.seg"), "w").close()
        open(os.path.join(dead, "owner.lock"), "w").close()
        held = open(os.path.join(live, "owner.lock"), "w")
        fcntl.flock(held, fcntl.LOCK_EX)
        self.restore("b", "r")
        self.assertFalse(os.path.exists(dead))
        self.assertTrue(os.path.exists(live) and os.path.exists(young))
        self.assertEqual(sorted(glob.glob(target + ".restore-*")), [live, young])
        self.assertFalse(os.path.exists(os.path.join(target, "owner.lock")))
        self.assertEqual(oct(os.stat(target).st_mode & 0o777), "0o755")
        held.close()
        rs = self.start(target)
        self.assertEqual(rs.client(decode_responses=True).xrange("s")[0][1], {"a": "b"})

    def test_target_must_be_empty(self):
        self.r.xadd("s", {"a": "b"})
        self.backup("b")
        os.mkdir(self.path("full"))
        open(self.path("full/x"), "w").close()
        rc, text = self.restore("b", "full", ok=False)
        self.assertEqual(rc, 4, text)
        self.assertTrue(os.path.exists(self.path("full/x")))
        os.mkdir(self.path("empty"))
        self.restore("b", "empty")
        self.assertTrue(os.path.exists(self.path("empty/EPOCHS")))
        rc, text = self.backup("b", ok=False)  # a folder holding a backup is not overwritten
        self.assertEqual(rc, 4, text)


class Damaged(BackupBase):
    def setUp(self):
        super().setUp()
        p = self.r.pipeline(transaction=False)
        for i in range(3000):
            p.xadd("s%d" % (i % 3), {"i": str(i), "pad": "q" * 400})
        p.execute()
        self.backup("good")
        self.backup("goodz", "--compress")

    def damage(self, src, how, target):
        dst = self.path(src + "-" + how.__name__)
        shutil.copytree(self.path(src), dst)
        how(os.path.join(dst, target) if target else dst)
        return dst

    def check_refused(self, dst, names):
        rc, text = run("verify", "--backup", dst)
        self.assertEqual(rc, 1, text)
        self.assertIn(names, text)
        out = self.path("restored-" + os.path.basename(dst))
        rc, text = run("restore", "--from", dst, "--data", out)
        self.assertEqual(rc, 1, text)
        self.assertIn(names, text)
        self.assertFalse(os.path.exists(out))
        self.assertEqual(glob.glob(out + ".restore-*"), [])

    def test_corruption_anywhere_is_refused(self):
        def flip(path):
            with open(path, "r+b") as f:
                f.seek(os.path.getsize(path) // 2)
                b = f.read(1)
                f.seek(-1, 1)
                f.write(bytes([b[0] ^ 0x40]))

        def delete(path):
            os.unlink(path)

        def truncate(path):
            os.truncate(path, os.path.getsize(path) - 8)

        segs = sorted(os.path.basename(p) for p in glob.glob(self.path("good/log/*.seg")))
        cases = [("good", flip, "MANIFEST", "MANIFEST"),
                 ("good", truncate, "MANIFEST", "MANIFEST"),
                 ("good", delete, "MANIFEST", "MANIFEST"),
                 ("good", flip, "log/" + segs[0], segs[0]),
                 ("good", flip, "log/" + segs[-1], segs[-1]),
                 ("good", truncate, "log/" + segs[0], segs[0]),
                 ("good", delete, "log/" + segs[1], segs[1]),
                 ("good", flip, "index/data.mdb", "data.mdb"),
                 ("good", flip, "STORE", "STORE"),
                 ("goodz", flip, "log/" + segs[0] + ".z", segs[0] + ".z"),
                 ("goodz", flip, "index/data.mdb.z", "data.mdb.z")]
        for src, how, target, names in cases:
            with self.subTest(src=src, how=how.__name__, target=target):
                dst = self.damage(src, how, target)
                self.check_refused(dst, names)
                shutil.rmtree(dst)

    def test_every_damaged_file_is_named_in_the_manifests_order(self):
        # files are checked several at a time; the report keeps the manifest's order
        segs = sorted(os.path.basename(p) for p in glob.glob(self.path("good/log/*.seg")))
        def damage_all(dst):
            for name in ["STORE"] + ["log/" + x for x in segs]:
                os.truncate(os.path.join(dst, name), os.path.getsize(os.path.join(dst, name)) - 1)
        dst = self.damage("good", damage_all, None)
        rc, text = run("verify", "--backup", dst)
        self.assertEqual(rc, 1, text)
        with open(os.path.join(dst, "MANIFEST")) as f:
            manifest = f.read()
        names = ["STORE"] + segs
        order = sorted(names, key=lambda n: manifest.index(" " + ("log/" if n != "STORE" else "") + n + " "))
        lines = [l for l in text.splitlines() if any(n in l for n in names)]
        self.assertEqual(len(lines), len(names), text)
        self.assertEqual([next(n for n in names if n in l) for l in lines], order, text)
        shutil.rmtree(dst)

    def test_manifest_cannot_name_files_outside(self):
        dst = self.damage("good", lambda d: None, None)
        with open(os.path.join(dst, "MANIFEST")) as f:
            text = f.read()
        text = text.replace("file STORE ", "file ../../evil ")
        body = text[:text.index("end ")]
        import zlib
        text = body + "end %08x\n" % (zlib.crc32(body.encode()) & 0xffffffff)
        with open(os.path.join(dst, "MANIFEST"), "w") as f:
            f.write(text)
        self.check_refused(dst, "MANIFEST")


if __name__ == "__main__":
    test_server.EVSTORE = os.path.abspath(sys.argv.pop(1))
    unittest.main(verbosity=2)
