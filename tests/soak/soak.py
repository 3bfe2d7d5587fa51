#!/usr/bin/python3
"""tests/soak/soak.py — a leader and a follower under mixed load for minutes, with one of them
SIGKILLed every --kill-every seconds (the leader: the follower is promoted and the old leader
restarted as its follower; the follower: restarted as it was). Half the leader kills come
after the follower was stalled for a second, and kill it too: the old leader then holds
writes of its own and must cut them when it rejoins. At the end a checker reads
everything back and reports acknowledged entries lost (must be 0), duplicated or reordered,
what the consumer group delivered, and RSS / open fds of both nodes over time (docs/
benchmarks.md, "Soak"). Outside CI: it runs for minutes.

Load (all on 127.0.0.1): --producers processes XADD to stream `soak` over RESP in pipelines
(fields p = producer, n = its sequence number, v = 100 bytes), one process publishes to
`soak-http` over the HTTP API (payload n) and lists the recent 50 every second, and two
consumer processes XREADGROUP + XACK stream `soak` in group `g` (after each reconnect,
their own pending entries first: a delivery whose reply a kill cut off stays pending), and
one process plays agent sessions, --session-rate a second: session k writes its own stream
`sess-<k>` (three XADDs) and drops the stream of session k-20 (DEL, then WAIT 1: a drop
that WAIT counted is on the follower too, so no promotion may bring the stream back). Both
nodes run `--ack all --min-replicas 1`: an acknowledged publish is fsynced on both, so it
must survive a promotion. A publish that got no answer (a killed node, NOREPLICAS, a
timeout) is not retried: it is "unacknowledged" and may or may not be present.

One more process takes an online backup of the leader every --backup-every seconds (full,
or incremental from the last one, whose chain may span failovers; some compressed): each
that succeeded must pass `verify --backup`, one a kill failed must have left no MANIFEST,
and the last two restored must hold every publish answered before their backup began.

Usage: tests/soak/soak.py --evstore build/evstore [--minutes 10] [--rate 10000]
                          [--kill-every 30] [--session-rate 20] [--backup-every 20]
                          [--workdir DIR]
"""
import argparse
import array
import http.client
import json
import multiprocessing as mp
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import redis

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from test_server import free_port  # noqa: E402 (tests/test_server.py)

PAYLOAD = "v" * 100


class Node:
    def __init__(self, evstore, name, workdir):
        self.evstore, self.name = evstore, name
        self.data = os.path.join(workdir, name)
        self.port, self.http_port = free_port(), free_port()
        self.log = open(os.path.join(workdir, name + ".log"), "ab")
        self.proc = None
        self.starts = 0

    def start(self, leader=None):
        args = [self.evstore, "serve", "--data", self.data, "--port", str(self.port),
                "--http-port", str(self.http_port), "--fsync", "always", "--ack", "all",
                "--min-replicas", "1", "--ack-timeout", "2000", "--max-clients", "200"]
        if leader:
            args += ["--replica-of", "127.0.0.1:%d" % leader.port]
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=self.log)
        self.starts += 1
        deadline = time.time() + 60  # a follower may copy the leader's store first
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError("%s exited with %d" % (self.name, self.proc.returncode))
                time.sleep(0.05)
        raise RuntimeError("%s did not start" % self.name)

    def client(self):
        return redis.Redis(port=self.port, socket_timeout=10)

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)

    def sample(self):
        pid = self.proc.pid
        try:
            with open("/proc/%d/status" % pid) as f:
                st = {l.split(":")[0]: l.split()[1] for l in f if l.startswith(("VmRSS", "RssAnon"))}
            fds = len(os.listdir("/proc/%d/fd" % pid))
            return int(st["VmRSS"]), fds, int(st["RssAnon"])
        except (OSError, KeyError):
            return None


def pace(next_t, period):
    """Sleep until next_t + period, the next turn of a load running at a steady rate; a load
    that fell over a second behind (a failover) starts afresh instead of bursting."""
    next_t += period
    delay = next_t - time.time()
    if delay > 0:
        time.sleep(delay)
    elif delay < -1:
        next_t = time.time()
    return next_t


def leader_client(r, at, ports, leader):
    """(client, node index) for the current leader: a new connection after a failover, or
    after an error dropped the last one (r None)."""
    if r is None or at != leader.value:
        at = leader.value
        r = redis.Redis(port=ports[at], socket_timeout=5)
    return r, at


# ---- load processes (each records what was acknowledged in a file of its own) -----------------

def producer(i, ports, leader, rate, stop, out):
    """XADD pipelines to the current leader; no retries."""
    batch = 50
    period = batch / rate
    acked = bytearray()  # acked[n] = 1
    answered = array.array("d")  # per batch: when its replies were all in (the backups' check)
    r, at, n = None, -1, 0
    next_t = time.time()
    while not stop.is_set():
        r, at = leader_client(r, at, ports, leader)
        p = r.pipeline(transaction=False)
        for k in range(batch):
            p.xadd("soak", {"p": i, "n": n + k, "v": PAYLOAD})
        acked.extend(b"\0" * batch)
        try:
            for k, res in enumerate(p.execute(raise_on_error=False)):
                if not isinstance(res, Exception):
                    acked[n + k] = 1
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            r = None
            time.sleep(0.05)
        answered.append(time.time())
        n += batch
        next_t = pace(next_t, period)
    with open(out, "wb") as f:
        f.write(bytes(acked))
    with open(out + ".t", "wb") as f:
        answered.tofile(f)


def http_producer(http_ports, leader, rate, stop, out, reads_out):
    acked = bytearray()
    n, reads, read_errors = 0, 0, 0
    next_t, next_read = time.time(), time.time()
    while not stop.is_set():
        port = http_ports[leader.value]
        acked.append(0)
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("POST", "/streams/soak-http/events",
                      body=json.dumps({"source": "soak", "type": "t", "payload": n}))
            resp = c.getresponse()
            resp.read()
            if resp.status == 201:
                acked[n] = 1
            if time.time() >= next_read:
                next_read = time.time() + 1
                c.request("GET", "/streams/soak-http/events?limit=50")
                resp = c.getresponse()
                body = resp.read()
                if resp.status == 200 and len(json.loads(body)["events"]) <= 50:
                    reads += 1
                else:
                    read_errors += 1
            c.close()
        except (OSError, http.client.HTTPException, ValueError):
            time.sleep(0.05)
        n += 1
        next_t = pace(next_t, 1 / rate)
    with open(out, "wb") as f:
        f.write(bytes(acked))
    with open(reads_out, "w") as f:
        json.dump({"reads": reads, "read_errors": read_errors}, f)


def consumer(name, ports, leader, producers, stop, out):
    """XREADGROUP > and XACK, and after each (re)connect its own pending entries first
    (XREADGROUP 0); records every (p, n) delivered, and how often."""
    seen = [dict() for _ in range(producers)]
    r, at = None, -1
    delivered = acks = 0
    backlog = False
    while not stop.is_set():
        try:
            if r is None or at != leader.value:
                at = leader.value
                r = redis.Redis(port=ports[at], socket_timeout=5)
                # its own pending entries first, as a consumer recovers: a delivery whose reply
                # a kill cut off is in the group's pending list (on the promoted follower too)
                backlog = True
            if backlog:
                res = r.xreadgroup("g", name, {"soak": "0"}, count=500)
            else:
                res = r.xreadgroup("g", name, {"soak": ">"}, count=500, block=500)
            ids = []
            for _, entries in res or []:
                for eid, f in entries:
                    p, n = int(f[b"p"]), int(f[b"n"])
                    seen[p][n] = seen[p].get(n, 0) + 1
                    ids.append(eid)
            backlog = backlog and bool(ids)
            delivered += len(ids)
            if ids:
                acks += r.xack("soak", "g", *ids)
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            r = None
            time.sleep(0.1)
        except redis.ResponseError:
            time.sleep(0.1)  # a follower just promoted, a group not there yet...
    with open(out, "w") as f:
        json.dump({"delivered": delivered, "acks": acks,
                   "seen": [list(s.items()) for s in seen]}, f)


SESSION_ENTRIES, SESSION_KEEP = 3, 20
S_DROP_SENT, S_DROPPED, S_DROP_COUNTED = 8, 16, 32  # bits 0-2: the entries acknowledged


def sessions(ports, leader, rate, stop, out):
    """Session k: XADD sess-<k> three times, DEL sess-<k-20>, WAIT 1 2000, in one pipeline;
    no retries. Records a byte per session: its acknowledged entries, and whether its drop
    was sent, answered, and counted by WAIT."""
    state = bytearray()
    r, at, k = None, -1, 0
    next_t = time.time()
    while not stop.is_set():
        r, at = leader_client(r, at, ports, leader)
        p = r.pipeline(transaction=False)
        for j in range(SESSION_ENTRIES):
            p.xadd("sess-%d" % k, {"s": k, "n": j, "type": "turn"})
        old = k - SESSION_KEEP
        if old >= 0:
            p.delete("sess-%d" % old)
            p.execute_command("WAIT", 1, 2000)
            state[old] |= S_DROP_SENT
        state.append(0)
        try:
            res = p.execute(raise_on_error=False)
            for j in range(SESSION_ENTRIES):
                if not isinstance(res[j], Exception):
                    state[k] |= 1 << j
            if old >= 0 and isinstance(res[SESSION_ENTRIES], int):
                state[old] |= S_DROPPED
                if isinstance(res[SESSION_ENTRIES + 1], int) and res[SESSION_ENTRIES + 1] >= 1:
                    state[old] |= S_DROP_COUNTED
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            r = None
            time.sleep(0.05)
        k += 1
        next_t = pace(next_t, 1 / rate)
    with open(out, "wb") as f:
        f.write(bytes(state))


def backups(evstore, ports, leader, failovers, every, stop, work, out):
    """An online backup of the current leader every `every` seconds, each fourth one full and
    the others incremental from the last that succeeded (so chains span failovers: leader and
    follower hold the same store), one in three compressed, one in two paced at 30 MB/s (so a
    kill of the leader often lands in one: it fails the backup it is serving; that is
    recorded, not retried). Records each attempt, and whether a failover came during it, for
    the checker (check_backups)."""
    done, prev, k = [], None, 0
    next_t = time.time() + every
    while not stop.wait(max(0, next_t - time.time())):
        next_t += every
        d = os.path.join(work, "backup-%d" % k)
        base = prev if k % 4 and prev else None
        at, seen = leader.value, failovers.value
        cmd = [evstore, "backup", "--server", "127.0.0.1:%d" % ports[at], "--out", d, "--quiet"]
        cmd += ["--incremental-from", base] if base else []
        cmd += ["--compress"] if k % 3 == 2 else []
        cmd += ["--rate", "30m"] if k % 2 else []
        t = time.time()
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
            rc, err = res.returncode, res.stderr.strip()[-300:]
        except subprocess.TimeoutExpired:
            rc, err = -1, "timed out"
        done.append({"k": k, "dir": d, "base": base, "t": t, "at": at,
                     "same_leader": seen == failovers.value, "rc": rc, "err": err})
        if rc == 0:
            prev = d
        k += 1
    with open(out, "w") as f:
        json.dump(done, f)


def check_backups(evstore, work, records, acked):
    """Every backup that succeeded passes `verify --backup`; one that failed left no MANIFEST
    (a folder without one is visibly incomplete). The last two that succeeded with one leader
    throughout are restored (a chain, when incremental) and hold every RESP publish whose
    pipeline was answered before the backup began, and the restored store verifies clean.
    acked: each producer's acknowledgements, as it recorded them."""
    producers = len(acked)
    answered = []
    for i in range(producers):
        t = array.array("d")
        with open(os.path.join(work, "acked-%d.t" % i), "rb") as f:
            t.frombytes(f.read())
        answered.append(t)
    res = {"taken": 0, "failed": 0, "bad": [], "restored": 0, "missing": 0, "chained": 0,
           "expected": 0}
    for b in records:
        if b["rc"] == 0:
            res["taken"] += 1
            res["chained"] += b["base"] is not None
            v = subprocess.run([evstore, "verify", "--backup", b["dir"]], capture_output=True,
                               text=True)
            if v.returncode != 0:
                res["bad"].append("backup-%d: verify exit %d: %s" % (b["k"], v.returncode,
                                                                       v.stdout[-300:]))
        else:
            res["failed"] += 1
            if os.path.exists(os.path.join(b["dir"], "MANIFEST")):
                res["bad"].append("backup-%d failed (exit %d: %s) but has a MANIFEST" % (
                    b["k"], b["rc"], b["err"]))
    chosen = [b for b in records if b["rc"] == 0 and b["same_leader"]][-2:]
    for b in chosen:
        target = os.path.join(work, "restore-%d" % b["k"])
        r = subprocess.run([evstore, "restore", "--from", b["dir"], "--data", target],
                           capture_output=True, text=True)
        if r.returncode != 0:
            res["bad"].append("restore of backup-%d: exit %d: %s" % (b["k"], r.returncode,
                                                                   r.stderr[-300:]))
            continue
        res["restored"] += 1
        have = [set() for _ in range(producers)]
        dump = subprocess.run([evstore, "dump", "--data", target, "soak"],
                              capture_output=True, text=True)
        for line in dump.stdout.splitlines():
            f = json.loads(line)["fields"]
            have[int(f["p"])].add(int(f["n"]))
        before = [(i, n) for i in range(producers) for n, ok in enumerate(acked[i])
                  if ok and n // 50 < len(answered[i]) and answered[i][n // 50] < b["t"]]
        res["expected"] += len(before)
        res["missing"] += sum(1 for i, n in before if n not in have[i])
        v = subprocess.run([evstore, "verify", "--data", target], capture_output=True, text=True)
        if v.returncode != 0:
            res["bad"].append("restore of backup-%d: verify exit %d" % (b["k"], v.returncode))
        shutil.rmtree(target, ignore_errors=True)
    # (a run too short for a backup has none to restore: nothing to fail)
    res["ok"] = not res["bad"] and res["missing"] == 0 and res["restored"] == len(chosen)
    return res


def check_sessions(lead, fol, converged, state):
    """What the sessions left: an acknowledged entry of a stream never dropped is there; a
    stream whose drop WAIT counted is gone; the follower lists the same streams; and both
    nodes freed every dropped stream's memory (streams_dropped_held, storage/streams.c S3)."""
    r = lead.client()
    names = ["sess-%d" % k for k in range(len(state))]
    got = []
    for at in range(0, len(names), 1000):
        p = r.pipeline(transaction=False)
        for n in names[at:at + 1000]:
            p.xrange(n)
        got += p.execute()
    c = dict(sessions=len(state), live=0, lost=0, resurrected=0, undone=0, strays=0)
    for k, entries in enumerate(got):
        st = state[k]
        ns = sorted(int(f[b"n"]) for _, f in entries)
        c["live"] += bool(entries)
        if any(int(f[b"s"]) != k for _, f in entries) or len(set(ns)) != len(ns):
            c["strays"] += 1
        if st & S_DROP_COUNTED:
            c["resurrected"] += bool(entries)
            continue
        if st & S_DROPPED and entries:
            c["undone"] += 1  # acknowledged, not replicated before a promotion: may come back
        if not (st & S_DROP_SENT) or (st & S_DROPPED and entries):
            c["lost"] += sum(1 for j in range(SESSION_ENTRIES) if st >> j & 1 and j not in ns)
    leader_set = sorted(lead.client().scan_iter(match="sess-*", count=1000))
    c["follower_same"] = converged and \
        sorted(fol.client().scan_iter(match="sess-*", count=1000)) == leader_set
    held = {}
    for nd in (lead, fol):
        deadline = time.time() + 15
        while True:
            # writers free dropped streams between requests
            lead.client().xadd("soak-tick", {"t": 1})
            caught_up(lead, fol, timeout=10)
            held[nd.name] = nd.client().info("evstore")["streams_dropped_held"]
            if held[nd.name] == 0 or time.time() > deadline:
                break
            time.sleep(0.1)
    c["held"] = held
    c["ok"] = c["lost"] == 0 and c["resurrected"] == 0 and c["strays"] == 0 and \
        c["follower_same"] and all(v == 0 for v in held.values())
    return c


# ---- the run ---------------------------------------------------------------------------------

def wait_role(node, role, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if node.client().execute_command("ROLE")[0].decode() == role:
                return True
        except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
            pass
        time.sleep(0.1)
    return False


def caught_up(leader, follower, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            end = leader.client().info("evstore")["log_bytes"]
            if follower.client().execute_command("ROLE")[4] >= end:
                return True
        except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError, IndexError):
            pass
        time.sleep(0.2)
    return False


def read_all(node, stream):
    r = node.client()
    out, start = [], "-"
    while True:
        chunk = r.xrange(stream, min=start, count=20000)
        if not chunk:
            return out
        out += chunk
        last = chunk[-1][0].decode()
        ms, seq = last.split("-")
        start = "%s-%d" % (ms, int(seq) + 1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--evstore", required=True)
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--rate", type=int, default=10000, help="events/s in all")
    ap.add_argument("--kill-every", type=float, default=30)
    ap.add_argument("--producers", type=int, default=4)
    ap.add_argument("--session-rate", type=float, default=20, help="sessions/s (0: none)")
    ap.add_argument("--backup-every", type=float, default=20,
                    help="seconds between online backups of the leader (0: none)")
    ap.add_argument("--workdir")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    random.seed(a.seed)
    work = a.workdir or tempfile.mkdtemp(prefix="evs-soak-")
    os.makedirs(work, exist_ok=True)
    evstore = os.path.abspath(a.evstore)
    nodes = [Node(evstore, "a", work), Node(evstore, "b", work)]
    nodes[0].start()
    nodes[1].start(leader=nodes[0])
    if not wait_role(nodes[1], "slave"):
        sys.exit("the follower did not connect")
    nodes[0].client().xgroup_create("soak", "g", id="0", mkstream=True)

    leader = mp.Value("i", 0)
    failovers = mp.Value("i", 0)  # promotions so far (a backup spanning one is not checked)
    ports = [n.port for n in nodes]
    http_ports = [n.http_port for n in nodes]
    stop, stop_consumers = mp.Event(), mp.Event()
    http_rate = max(1, a.rate // 50)
    per = (a.rate - http_rate) / a.producers
    procs = [mp.Process(target=producer, args=(i, ports, leader, per, stop,
                                               os.path.join(work, "acked-%d" % i)))
             for i in range(a.producers)]
    procs.append(mp.Process(target=http_producer, args=(http_ports, leader, http_rate, stop,
                                                        os.path.join(work, "acked-http"),
                                                        os.path.join(work, "http-reads"))))
    if a.session_rate > 0:
        procs.append(mp.Process(target=sessions, args=(ports, leader, a.session_rate, stop,
                                                       os.path.join(work, "sessions"))))
    if a.backup_every > 0:
        procs.append(mp.Process(target=backups, args=(evstore, ports, leader, failovers,
                                                      a.backup_every, stop, work,
                                                      os.path.join(work, "backups"))))
    consumers = [mp.Process(target=consumer, args=("c%d" % i, ports, leader, a.producers,
                                                   stop_consumers,
                                                   os.path.join(work, "consumer-%d" % i)))
                 for i in range(2)]
    for p in procs + consumers:
        p.start()

    t0 = time.time()
    end = t0 + a.minutes * 60
    next_kill = t0 + a.kill_every
    samples, events = [], []
    next_sample = t0
    while time.time() < end:
        now = time.time()
        if now >= next_sample:
            next_sample += 5
            for idx, nd in enumerate(nodes):
                s = nd.sample()
                if s:
                    samples.append((round(now - t0), nd.name, "leader" if idx == leader.value
                                    else "follower", nd.proc.pid, s[0], s[1], s[2]))
        if now >= next_kill:
            next_kill += a.kill_every
            lead, fol = nodes[leader.value], nodes[1 - leader.value]
            draw = random.random()
            if draw < 0.5:
                fol.kill()
                fol.start(leader=lead)
                events.append((round(now - t0, 1), "follower %s SIGKILLed and restarted" % fol.name))
            else:
                # one leader kill in two comes while the follower is stalled for a second, and
                # the follower is killed too (what it had not read from its socket is gone)
                # and restarted: the leader's last writes (unacknowledged under --ack all) are
                # its own, and back as a follower it must cut them (docs/replication.md)
                stalled = draw >= 0.75
                if stalled:
                    fol.proc.send_signal(signal.SIGSTOP)
                    time.sleep(1)
                failovers.value += 1
                lead.kill()
                if stalled:
                    fol.kill()
                    fol.start(leader=lead)
                c = fol.client()
                while True:
                    try:
                        c.execute_command("REPLICAOF", "NO", "ONE")
                        break
                    except (redis.ConnectionError, redis.TimeoutError):
                        time.sleep(0.1)
                leader.value = nodes.index(fol)
                lead.start(leader=fol)
                events.append((round(now - t0, 1), "%sleader %s SIGKILLed, %s promoted, %s rejoined"
                               % ("follower %s stalled 1 s and killed with it, " % fol.name
                                  if stalled else "",
                                  lead.name, fol.name, lead.name)))
        time.sleep(0.2)

    stop.set()
    for p in procs:
        p.join(timeout=120)
    lead, fol = nodes[leader.value], nodes[1 - leader.value]
    deadline = time.time() + 60  # the consumers drain what is left
    while time.time() < deadline:
        g = lead.client().xinfo_groups("soak")[0]
        if g.get("lag") == 0:
            break
        time.sleep(0.5)
    stop_consumers.set()
    for p in consumers:
        p.join(timeout=120)
    converged = caught_up(lead, fol)
    stats = lead.client().info("evstore")

    # ---- the checker -------------------------------------------------------------------------
    lost = dup = reordered = unacked_present = acked_total = 0
    entries = read_all(lead, "soak")
    pos = [dict() for _ in range(a.producers)]
    last_n = [-1] * a.producers
    for eid, f in entries:
        p, n = int(f[b"p"]), int(f[b"n"])
        if n in pos[p]:
            dup += 1
        pos[p][n] = eid
        if n < last_n[p]:
            reordered += 1
        last_n[p] = max(last_n[p], n)
    acked = []
    for i in range(a.producers):
        with open(os.path.join(work, "acked-%d" % i), "rb") as f:
            acked.append(f.read())
        for n, ok in enumerate(acked[i]):
            if ok:
                acked_total += 1
                lost += n not in pos[i]
            else:
                unacked_present += n in pos[i]
    hentries = read_all(lead, "soak-http")
    hn = [int(f[b"payload"]) for _, f in hentries]
    with open(os.path.join(work, "acked-http"), "rb") as f:
        hacked = f.read()
    hset = set(hn)
    h_acked = sum(hacked)
    h_lost = sum(1 for n, ok in enumerate(hacked) if ok and n not in hset)
    h_dup = len(hn) - len(hset)
    h_reordered = sum(1 for x, y in zip(hn, hn[1:]) if y < x)
    with open(os.path.join(work, "http-reads")) as f:
        hreads = json.load(f)
    delivered = acks = 0
    seen = [set() for _ in range(a.producers)]
    redelivered = 0
    for i in range(2):
        with open(os.path.join(work, "consumer-%d" % i)) as f:
            c = json.load(f)
        delivered += c["delivered"]
        acks += c["acks"]
        for p, items in enumerate(c["seen"]):
            for n, cnt in items:
                redelivered += cnt - 1 + (n in seen[p])
                seen[p].add(n)
    never_delivered = sum(1 for p in range(a.producers) for n in pos[p] if n not in seen[p])
    follower_len = fol.client().xlen("soak") if converged else -1
    sess = None
    if a.session_rate > 0:
        with open(os.path.join(work, "sessions"), "rb") as f:
            sess = check_sessions(lead, fol, converged, f.read())
    bk = None
    if a.backup_every > 0:
        with open(os.path.join(work, "backups")) as f:
            bk = check_backups(evstore, work, json.load(f), acked)
    rc_lead, rc_fol = lead.stop(), fol.stop()
    verify = [subprocess.run([evstore, "verify", "--data", nd.data], capture_output=True,
                             text=True).returncode for nd in nodes]

    cuts = []  # net/repl_follower.c logs each cut
    for nd in nodes:
        nd.log.flush()
        with open(os.path.join(work, nd.name + ".log"), errors="replace") as f:
            cuts += [int(m.group(1)) for m in
                     (re.search(r"cutting (\d+) bytes at log position", l) for l in f) if m]

    # ---- the report ----------------------------------------------------------------------
    dur = a.minutes * 60
    print("### Soak run (%s)\n" % time.strftime("%Y-%m-%d"))
    print("`tests/soak/soak.py --evstore %s --minutes %g --rate %d --kill-every %g --producers %d "
          "--session-rate %g --backup-every %g --seed %d`\n" % (
              a.evstore, a.minutes, a.rate, a.kill_every, a.producers, a.session_rate,
              a.backup_every, a.seed))
    print("| | |\n|---|---|")
    print("| duration | %.0f s; %d kills: %d of the leader (promotion), %d of the follower |" % (
        dur, len(events), sum("promoted" in e for _, e in events),
        sum("follower" in e and "promoted" not in e for _, e in events)))
    print("| RESP publishes acknowledged | %d (%.0f/s); in the log: %d entries |" % (
        acked_total, acked_total / dur, len(entries)))
    print("| **acknowledged lost** | **%d** RESP, **%d** HTTP |" % (lost, h_lost))
    print("| duplicated / reordered | %d / %d RESP, %d / %d HTTP |" % (dup, reordered, h_dup, h_reordered))
    print("| unacknowledged publishes present anyway | %d (no answer, e.g. a kill mid-batch: either way is correct) |" % unacked_present)
    print("| HTTP publishes acknowledged | %d; list-recent reads %d ok, %d failed (kills) |" % (
        h_acked, hreads["reads"], hreads["read_errors"]))
    print("| consumer group | %d deliveries, %d XACKed, %d redeliveries (after a failover the group's last-delivered ID is the replicated one); entries never delivered: %d |" % (
        delivered, acks, redelivered, never_delivered))
    print("| end | follower converged: %s (XLEN %d = leader %d); exits %d/%d; `evstore verify` %s |" % (
        converged, follower_len, len(entries), rc_lead, rc_fol, "/".join(map(str, verify))))
    if sess:
        print("| agent sessions | %d sessions (a stream each, the oldest dropped 20 later); %d streams left; "
              "**%d** acknowledged entries lost, **%d** streams back after a drop WAIT counted, "
              "%d back after an uncounted drop (a promotion may undo one), %d with strays; "
              "follower lists the same streams: %s; dropped streams still held: %s |" % (
                  sess["sessions"], sess["live"], sess["lost"], sess["resurrected"], sess["undone"],
                  sess["strays"], sess["follower_same"],
                  ", ".join("%s %d" % kv for kv in sess["held"].items())))
    if bk:
        print("| online backups | %d taken (%d incremental, chains across failovers), %d failed "
              "(a kill of the leader serving it); %d restored: **%d** of the %d publishes answered "
              "before their backup began missing from it; %s |" % (
                  bk["taken"], bk["chained"], bk["failed"], bk["restored"], bk["missing"],
                  bk["expected"],
                  "; ".join(bk["bad"]) or "every backup verified, no failed one left a MANIFEST"))
    print("| cuts | %d old leaders cut their unreplicated tail on rejoining: %s bytes |" % (
        len(cuts), ", ".join(map(str, cuts)) or "none"))
    print("| leader's log | %.0f MiB, %d segments |" % (stats["log_bytes"] / 2**20, stats["segments"]))
    print()
    print("RSS (KiB; anonymous = heap, the rest is mapped segment and index pages) and open fds,"
          " every 5 s, per node (a restart starts a new process):\n")
    print("| node | samples | RSS first / median / last / max | anonymous first / median / last / max | fds first / median / last / max |")
    print("|---|---|---|---|---|")
    for nd in nodes:
        s = [x for x in samples if x[1] == nd.name]
        if not s:
            continue
        rss = [x[4] for x in s]
        fds = [x[5] for x in s]
        anon = [x[6] for x in s]
        med = lambda v: sorted(v)[len(v) // 2]
        print("| %s | %d | %d / %d / %d / %d | %d / %d / %d / %d | %d / %d / %d / %d |" % (
            nd.name, len(s), rss[0], med(rss), rss[-1], max(rss), anon[0], med(anon), anon[-1],
            max(anon), fds[0], med(fds), fds[-1], max(fds)))
    print()
    print("Kills: " + "; ".join("%gs %s" % e for e in events))
    with open(os.path.join(work, "samples.csv"), "w") as f:
        f.write("t_s,node,role,pid,rss_kb,fds,anon_kb\n")
        for x in samples:
            f.write(",".join(map(str, x)) + "\n")
    ok = lost == 0 and h_lost == 0 and dup == 0 and reordered == 0 and converged and \
        never_delivered == 0 and verify == [0, 0] and (sess is None or sess["ok"]) and \
        (bk is None or bk["ok"])
    print("\nRESULT: %s (work folder %s)" % ("PASS" if ok else "FAIL", work))
    if ok and not a.workdir:
        shutil.rmtree(work, ignore_errors=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
