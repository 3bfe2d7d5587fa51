#!/usr/bin/python3
"""tests/soak/dropmem.py — the anonymous memory (RssAnon) of a server that creates and drops
streams in rounds, as an event bridge with a stream per agent session does. Each round XADDs
one entry to each of N new streams and DELs them (pipelines of 1,000), then lets an index
commit pass; the figure after each round should level off (storage/streams.c S3,
docs/architecture.md "Memory per stream"). Outside CI: about a minute per 100,000 streams.

Usage: tests/soak/dropmem.py --evstore build/evstore [--rounds 5] [--streams 100000]
"""
import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import test_server  # noqa: E402 (tests/test_server.py: Server starts it on free ports)


def rss_anon_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("RssAnon"):
                return int(line.split()[1]) // 1024
    raise RuntimeError("no RssAnon in /proc/%d/status" % pid)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--evstore", required=True)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--streams", type=int, default=100000)
    a = ap.parse_args()
    test_server.EVSTORE = os.path.abspath(a.evstore)
    work = tempfile.mkdtemp(prefix="evstore-dropmem-")
    srv = test_server.Server(os.path.join(work, "data"), "--fsync", "no").start()
    try:
        r = srv.client()
        figures = [rss_anon_mib(srv.proc.pid)]
        for k in range(a.rounds):
            for base in range(0, a.streams, 1000):
                names = [f"session:{k}:{i}" for i in range(base, min(base + 1000, a.streams))]
                p = r.pipeline(transaction=False)
                for n in names:
                    p.xadd(n, {"source": "agent", "type": "turn", "p": "x" * 40})
                p.execute()
                r.delete(*names)
            time.sleep(1.5)             # the index commit after the drops (once a second)
            r.xadd("tick", {"a": "b"})  # and a writer turn after it
            time.sleep(0.5)
            figures.append(rss_anon_mib(srv.proc.pid))
        held = r.info("evstore").get("streams_dropped_held", "(not reported)")
        print(f"{a.evstore}: RssAnon MiB at start and after each round of {a.streams} streams "
              f"created and dropped: {' -> '.join(map(str, figures))}; "
              f"streams_dropped_held {held}")
    finally:
        srv.stop()
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
