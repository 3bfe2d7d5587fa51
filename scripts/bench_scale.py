#!/usr/bin/python3
"""bench_scale.py — what a command costs as a store grows wide: idle waiters on other streams,
a group with many consumers, a long pending list, a stream with many groups. evstore beside
Redis in one run.

One `evstore serve` and one `redis-server --appendonly yes`, started afresh for each case and
round; rounds interleaved, medians reported, with evstore's figure over Redis's. The publish
cases run with `--fsync always` / `appendfsync always` (the durability evstore gives: each
visible batch wakes the loop); the group cases with `--fsync no` / `appendfsync no`, so that
the figures are what the commands cost as the group grows, not the fsyncs they wait for (a
pipeline of group commands on one connection waits for each one's own commit: server.h N4).

- publish with idle waiters: `redis-benchmark -c 4` XADD to one stream (each client's XADD
  mostly its own fsync: a visible batch each), first alone, then with W clients blocked in
  `XREAD BLOCK 0` on W other streams; on evstore also with W live tails (SSE) on W other
  streams (Redis has no such thing: its column shows the bare publish); and with F live tails
  of the published stream itself (`curl -N`), each entry going out F times.
- a group with C consumers: `XGROUP CREATECONSUMER` of all (pipelined), then 5,000 pipelined
  `XREADGROUP COUNT 1` by 5,000 different consumers.
- a pending list of P entries: one consumer reads them all, then 5,000 pipelined `XACK`s of
  single entries, 2,000 history reads (`XREADGROUP ... 0`) and 2,000 `XPENDING` of another
  consumer that has none pending, and 2,000 `XREADGROUP COUNT 1`.
- a stream with G groups: `XGROUP CREATE` of all, then 5,000 `XREADGROUP COUNT 1` over them.
- trimmed publish: `redis-benchmark -c 50 -P 16` XADD to one stream, plain and with MAXLEN
  1000 (exact and `~`) and MAXLEN 10, durable (`--fsync always` / `appendfsync always`).

Prints a markdown section on stdout.
Usage: /usr/bin/python3 scripts/bench_scale.py [--waiters W] [--fanout F] [--consumers C] [--pending P]
       [--groups G] [--rounds R] [--evstore BINARY]   (needs redis-server, redis-benchmark)
"""
import argparse
import datetime
import os
import re
import shutil
import socket
import statistics
import subprocess
import tempfile
import time

import redis

from bench_util import free_port, wait_port

EV = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "build", "evstore")


class Srv:
    binary = EV

    def __init__(self, kind, durable=True):
        self.kind = kind
        self.work = tempfile.mkdtemp(prefix="bench-scale-")
        self.port = free_port()
        self.http = free_port()
        if kind == "evstore":
            cmd = [self.binary, "serve", "--data", os.path.join(self.work, "ev"), "--port", str(self.port),
                   "--http-port", str(self.http), "--fsync", "always" if durable else "no",
                   "--max-clients", "20000",
                   "--max-tails", "20000"]
        else:
            cmd = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                   "--appendonly", "yes", "--appendfsync", "always" if durable else "no",
                   "--dir", self.work,
                   "--maxclients", "20000"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)
        self.r = redis.Redis(port=self.port, socket_timeout=600)

    def close(self):
        self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.work, ignore_errors=True)


def timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def cpu_seconds(pid):
    f = open("/proc/%d/stat" % pid).read().split(")")[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def publish_rate(port, pid=None):
    """XADD/s of 20,000 publishes; with pid, also the server's CPU microseconds per publish."""
    c0 = cpu_seconds(pid) if pid else 0
    out = subprocess.run(["redis-benchmark", "-p", str(port), "-c", "4", "-n", "20000", "-q",
                          "XADD", "pub", "*", "f", "v"], capture_output=True, text=True).stdout
    rate = float(re.findall(r"([0-9.]+) requests per second", out)[-1])
    if pid:
        return rate, (cpu_seconds(pid) - c0) / 20000 * 1e6
    return rate


def pipelined_rate(port, *cmd):
    out = subprocess.run(["redis-benchmark", "-p", str(port), "-c", "50", "-P", "16", "-n", "200000",
                          "-q", *cmd], capture_output=True, text=True).stdout
    return float(re.findall(r"([0-9.]+) requests per second", out)[-1])


TRIMS = [("plain", ()), ("maxlen1000", ("MAXLEN", "1000")), ("approx1000", ("MAXLEN", "~", "1000")),
         ("maxlen10", ("MAXLEN", "10"))]


def case_trims(kind):
    s = Srv(kind)
    try:
        return {key: pipelined_rate(s.port, "XADD", key, *args, "*", "f", "v") for key, args in TRIMS}
    finally:
        s.close()


def waiters(s, kind, n):
    socks = []
    for i in range(n):
        if kind == "sse":
            c = socket.create_connection(("127.0.0.1", s.http))
            c.sendall(b"GET /streams/w%d/events/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % i)
        else:
            c = socket.create_connection(("127.0.0.1", s.port))
            k = b"w%d" % i
            c.sendall(b"*6\r\n$5\r\nXREAD\r\n$5\r\nBLOCK\r\n$1\r\n0\r\n$7\r\nSTREAMS\r\n$%d\r\n%s\r\n"
                      b"$1\r\n$\r\n" % (len(k), k))
        socks.append(c)
    deadline = time.time() + 30  # every one parked before the measurement
    while time.time() < deadline:
        info = s.r.info("clients")
        if kind == "sse" or info.get("blocked_clients", 0) >= n:
            break
        time.sleep(0.05)
    time.sleep(0.5)
    return socks


def fanout_rate(s, n):
    """Publishing to the stream n live tails follow (each a `curl -N` reading the SSE stream
    into /dev/null): every entry goes out n times."""
    url = "http://127.0.0.1:%d/streams/pub/events/live" % s.http
    tails = [subprocess.Popen(["curl", "-sN", url], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL) for _ in range(n)]
    try:
        time.sleep(1.0)  # all connected and waiting
        return publish_rate(s.port, s.proc.pid)
    finally:
        for t in tails:
            t.kill()
            t.wait()


def case_waiters(kind, n, fan):
    s = Srv(kind)
    try:
        res = {"alone": publish_rate(s.port)}
        if kind == "evstore":
            res["fanout"], res["fanout_cpu"] = fanout_rate(s, fan)
            res["alone_cpu"] = publish_rate(s.port, s.proc.pid)[1]
        else:
            res["fanout"] = res["alone"]
        socks = waiters(s, "xread", n)
        res["xread"] = publish_rate(s.port)
        for c in socks:
            c.close()
        if kind == "evstore":
            socks = waiters(s, "sse", n)
            res["sse"] = publish_rate(s.port)
            for c in socks:
                c.close()
        else:
            res["sse"] = res["alone"]
        return res
    finally:
        s.close()


def pipelined(r, cmds, every=1000):
    p = r.pipeline(transaction=False)
    for i, c in enumerate(cmds):
        if c[0] == "XPENDING":  # the extended form, for redis-py's reply parser
            p.execute_command(*c, parse_detail=True)
        else:
            p.execute_command(*c)
        if i % every == every - 1:
            p.execute()
    p.execute()


def case_groups(kind, consumers, pending, groups):
    s = Srv(kind, durable=False)  # what the commands cost, not the fsyncs they wait for
    r = s.r
    res = {}
    try:
        r.xadd("c", {"f": "v"})
        r.xgroup_create("c", "g", "0")
        res["mkcons"] = timed(lambda: pipelined(r, (("XGROUP", "CREATECONSUMER", "c", "g", "c%d" % i)
                                                    for i in range(consumers))))
        res["readcons"] = timed(lambda: pipelined(r, (("XREADGROUP", "GROUP", "g", "c%d" % (consumers - 1 - i),
                                                       "COUNT", "1", "STREAMS", "c", ">")
                                                      for i in range(5000))))
        pipelined(r, (("XADD", "p", "*", "f", "v") for _ in range(pending)), every=5000)
        r.xgroup_create("p", "g", "0")
        ids = []
        while True:
            got = r.xreadgroup("g", "one", {"p": ">"}, count=10000)
            if not got:
                break
            ids += [e[0] for e in got[0][1]]
        assert len(ids) == pending, (kind, len(ids))
        res["ack"] = timed(lambda: pipelined(r, (("XACK", "p", "g", ids[i * 37 % len(ids)]) for i in range(5000))))
        r.xgroup_createconsumer("p", "g", "idle")
        res["history"] = timed(lambda: pipelined(r, (("XREADGROUP", "GROUP", "g", "idle", "COUNT", "10",
                                                      "STREAMS", "p", "0") for _ in range(2000))))
        res["pendcons"] = timed(lambda: pipelined(r, (("XPENDING", "p", "g", "-", "+", "10", "idle")
                                                      for _ in range(2000))))
        pipelined(r, (("XADD", "p", "*", "f", "v") for _ in range(2000)))
        res["readpel"] = timed(lambda: pipelined(r, (("XREADGROUP", "GROUP", "g", "one", "COUNT", "1",
                                                      "STREAMS", "p", ">") for _ in range(2000))))
        r.xadd("m", {"f": "v"})
        res["mkgroups"] = timed(lambda: pipelined(r, (("XGROUP", "CREATE", "m", "g%d" % i, "0")
                                                      for i in range(groups))))
        res["readgroups"] = timed(lambda: pipelined(r, (("XREADGROUP", "GROUP", "g%d" % (i * 7 % groups), "c",
                                                         "COUNT", "1", "STREAMS", "m", ">")
                                                        for i in range(5000))))
        return res
    finally:
        s.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--waiters", type=int, default=1000)
    ap.add_argument("--consumers", type=int, default=100000)
    ap.add_argument("--pending", type=int, default=1000000)
    ap.add_argument("--groups", type=int, default=20000)
    ap.add_argument("--fanout", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--evstore", default=EV, help="the binary to measure (default: build/evstore)")
    a = ap.parse_args()
    Srv.binary = a.evstore
    w = {"evstore": [], "redis": []}
    g = {"evstore": [], "redis": []}
    t = {"evstore": [], "redis": []}
    for _ in range(a.rounds):  # interleaved: the machine's swings hit both
        for kind in ("evstore", "redis"):
            w[kind].append(case_waiters(kind, a.waiters, a.fanout))
            t[kind].append(case_trims(kind))
            g[kind].append(case_groups(kind, a.consumers, a.pending, a.groups))
    med = lambda runs, k: statistics.median(x[k] for x in runs)
    print("Produced by `/usr/bin/python3 scripts/bench_scale.py --waiters %d --fanout %d --consumers %d "
          "--pending %d --groups %d --rounds %d` on %s; Redis 7.0 in the same run (publish: "
          "`appendfsync always`, groups: `appendfsync no`, evstore likewise), rounds interleaved; "
          "medians.\n" % (a.waiters, a.fanout, a.consumers, a.pending, a.groups, a.rounds,
                          datetime.date.today().isoformat()))
    print("| publish (XADD/s, `redis-benchmark -c 4`) | evstore | Redis | evstore / Redis |")
    print("|---|---|---|---|")
    rows = [("alone", "no other client"),
            ("xread", "%d clients in `XREAD BLOCK 0` on other streams" % a.waiters),
            ("sse", "%d live tails (SSE) on other streams (Redis: none)" % a.waiters),
            ("fanout", "%d live tails (SSE, `curl -N`) of the published stream: each entry sent %d "
                       "times (Redis: none)" % (a.fanout, a.fanout))]
    for key, label in rows:
        e, r_ = med(w["evstore"], key), med(w["redis"], key)
        print("| %s | %.0f | %.0f | %.2f× |" % (label, e, r_, e / r_))
    print("\nWith %d live tails of the published stream the server spends %.0f µs of CPU per "
          "publish (median), against %.0f µs with none: %.2f µs per tail and entry (the tails' own "
          "CPU, %d `curl` processes on the same cores, bounds the rate as much as the "
          "server's)." % (a.fanout, med(w["evstore"], "fanout_cpu"), med(w["evstore"], "alone_cpu"),
                       (med(w["evstore"], "fanout_cpu") - med(w["evstore"], "alone_cpu")) / a.fanout,
                       a.fanout))
    print("\n| trimmed publish (XADD/s, `redis-benchmark -c 50 -P 16`) | evstore | Redis | evstore / Redis |")
    print("|---|---|---|---|")
    rows = [("plain", "`XADD s * f v`"), ("maxlen1000", "`XADD s MAXLEN 1000 * f v` (exact)"),
            ("approx1000", "`XADD s MAXLEN ~ 1000 * f v`"), ("maxlen10", "`XADD s MAXLEN 10 * f v` (exact)")]
    for key, label in rows:
        e, r_ = med(t["evstore"], key), med(t["redis"], key)
        print("| %s | %.0f | %.0f | %.2f× |" % (label, e, r_, e / r_))
    print("\n| group commands (seconds; pipelined) | evstore | Redis | evstore / Redis |")
    print("|---|---|---|---|")
    rows = [("mkcons", "`XGROUP CREATECONSUMER` of %d consumers in one group" % a.consumers),
            ("readcons", "5,000 `XREADGROUP COUNT 1`, each by another of those consumers"),
            ("ack", "5,000 `XACK` of one entry each, in a pending list of %d" % a.pending),
            ("history", "2,000 `XREADGROUP ... STREAMS p 0` (own history) by a consumer with none pending, beside it"),
            ("pendcons", "2,000 `XPENDING p g - + 10 idle` of that consumer, beside it"),
            ("readpel", "2,000 `XREADGROUP COUNT 1` of new entries, beside that pending list"),
            ("mkgroups", "`XGROUP CREATE` of %d groups on one stream" % a.groups),
            ("readgroups", "5,000 `XREADGROUP COUNT 1` over those groups")]
    for key, label in rows:
        e, r_ = med(g["evstore"], key), med(g["redis"], key)
        print("| %s | %.3f | %.3f | %.2f× |" % (label, e, r_, e / r_ if r_ else float("inf")))


if __name__ == "__main__":
    main()
