#!/usr/bin/python3
"""bench_keyspace.py — keyspace commands over many streams, evstore beside Redis in one run.

One `evstore serve --fsync always` and one `redis-server --appendonly yes --appendfsync always`
(the durability evstore gives), each filled with N streams of one entry ("stream:<i>"). Then,
on each: a whole `SCAN 0 COUNT 10` walk (what `redis-cli --scan` does), a whole `SCAN ... COUNT
1000` walk, `KEYS stream:4*`, one `DEL` of 2,000 keys, and `FLUSHALL` of the rest. Each round
starts both servers afresh; the medians of the rounds are reported, with evstore's time over
Redis's.

Prints a markdown section on stdout.
Usage: /usr/bin/python3 scripts/bench_keyspace.py [--streams N] [--rounds R] (needs build/evstore)
"""
import argparse
import datetime
import os
import shutil
import statistics
import subprocess
import tempfile
import time

import redis

from bench_util import free_port, wait_port

EV = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "build", "evstore")


def start(kind, work):
    port = free_port()
    if kind == "evstore":
        cmd = [EV, "serve", "--data", os.path.join(work, "ev"), "--port", str(port),
               "--http-port", "0", "--fsync", "always"]
    else:
        cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "yes", "--appendfsync", "always", "--dir", work]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    return proc, redis.Redis(port=port, socket_timeout=600)


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def one_round(kind, n):
    work = tempfile.mkdtemp(prefix="bench-keyspace-")
    proc, r = start(kind, work)
    try:
        p = r.pipeline(transaction=False)
        for i in range(n):
            p.xadd("stream:%d" % i, {"f": "v"})
            if i % 5000 == 4999:
                p.execute()
        p.execute()
        res = {}
        res["scan10"], got = timed(lambda: sum(1 for _ in r.scan_iter(count=10)))
        assert got == n, (kind, got)
        res["scan1000"], got = timed(lambda: sum(1 for _ in r.scan_iter(count=1000)))
        assert got == n, (kind, got)
        res["keys"], _ = timed(lambda: r.keys("stream:4*"))
        res["del2000"], got = timed(lambda: r.delete(*["stream:%d" % i for i in range(2000)]))
        assert got == 2000, (kind, got)
        res["flushall"], _ = timed(r.flushall)
        assert r.dbsize() == 0
        return res
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--streams", type=int, default=50000)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    runs = {"evstore": [], "redis": []}
    for _ in range(a.rounds):  # interleaved: the machine's swings hit both
        for kind in ("evstore", "redis"):
            runs[kind].append(one_round(kind, a.streams))
    rows = [("scan10", "whole `SCAN` walk, COUNT 10"), ("scan1000", "whole `SCAN` walk, COUNT 1000"),
            ("keys", "`KEYS stream:4*`"), ("del2000", "one `DEL` of 2,000 keys"),
            ("flushall", "`FLUSHALL` of the other %d" % (a.streams - 2000))]
    print("Produced by `/usr/bin/python3 scripts/bench_keyspace.py --streams %d --rounds %d` on %s; "
          "Redis 7.0 (`appendfsync always`) in the same run, rounds interleaved; medians.\n"
          % (a.streams, a.rounds, datetime.date.today().isoformat()))
    print("| %d streams | evstore | Redis | evstore / Redis |" % a.streams)
    print("|---|---|---|---|")
    for key, label in rows:
        e = statistics.median(r[key] for r in runs["evstore"])
        r_ = statistics.median(r[key] for r in runs["redis"])
        print("| %s | %.3f s | %.3f s | %.2f× |" % (label, e, r_, e / r_ if r_ else float("inf")))


if __name__ == "__main__":
    main()
