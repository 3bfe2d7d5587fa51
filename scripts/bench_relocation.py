#!/usr/bin/python3
"""bench_relocation.py — what a relocation costs publishers (docs/architecture.md, Retention).

One `evstore serve --fsync always` (64 MiB segments, server default MAXAGE 3s), a stream
"rare" kept by count (3,500 entries of 1 KiB: 3.7 MB, just under the 4 MiB a stream may
have to be relocated) and written once, a stream "busy" written at ~20 MB/s (1,000 entries
of 1 KiB every 50 ms) whose entries expire after 3 s. Every time the log turns over up to
rare's entries, retention copies them to the head (the server logs each relocation with its
duration). A probe XADDs to a third stream once a millisecond on its own connection and
records each latency. Reported: each relocation's duration and bytes, the probe's worst
latency during a relocation (from its start to 50 ms after its end), and, the same-run
reference, the probe's p50/p99/max outside those windows.

Prints a markdown section on stdout.
Usage: /usr/bin/python3 scripts/bench_relocation.py [--seconds N] (needs build/evstore)
"""
import datetime
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import redis

from bench_util import free_port

EV = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "build", "evstore")


def main():
    seconds = 40
    if "--seconds" in sys.argv:
        seconds = int(sys.argv[sys.argv.index("--seconds") + 1])
    work = tempfile.mkdtemp(prefix="evs-bench-reloc-", dir=os.getcwd())
    port = free_port()
    logf = os.path.join(work, "server.log")
    with open(logf, "w") as log:
        srv = subprocess.Popen([EV, "serve", "--data", os.path.join(work, "d"), "--port", str(port),
                                "--http-port", "0", "--fsync", "always",
                                "--retention-max-age", "3s"], stdout=log, stderr=log)
    try:
        r = redis.Redis(port=port)
        for _ in range(200):
            try:
                r.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        r.xadd("rare", {"v": "x" * 1000})
        r.execute_command("XRETENTION", "rare", "SET", "MAXAGE", "NONE", "MAXENTRIES", "3500")
        p = r.pipeline(transaction=False)
        for _ in range(3500):
            p.xadd("rare", {"v": "x" * 1000})
        p.execute()
        stop = threading.Event()
        lat = []

        def probe():
            c = redis.Redis(port=port)
            while not stop.is_set():
                t = time.time()
                c.xadd("probe", {"k": "v"})
                lat.append((t, (time.time() - t) * 1000))
                time.sleep(0.001)

        th = threading.Thread(target=probe)
        th.start()
        pad = "b" * 1000
        end = time.time() + seconds
        while time.time() < end:
            t0 = time.time()
            p = r.pipeline(transaction=False)
            for _ in range(1000):
                p.xadd("busy", {"pad": pad})
            p.execute()
            time.sleep(max(0.0, 0.05 - (time.time() - t0)))
        stop.set()
        th.join()
        info = r.info("evstore")
    finally:
        srv.terminate()
        srv.wait()
    relocs = []  # (start, end, bytes, ms)
    pat = re.compile(r"^(\S+)Z info retention: relocated \d+ small streams \((\d+) bytes, ([\d.]+) ms\)")
    for line in open(logf):
        m = pat.match(line)
        if m:
            t_end = datetime.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S.%f").replace(
                tzinfo=datetime.timezone.utc).timestamp()
            ms = float(m.group(3))
            relocs.append((t_end - ms / 1000, t_end, int(m.group(2)), ms))
    shutil.rmtree(work, ignore_errors=True)

    def inside(t):
        return any(a <= t <= b + 0.05 for a, b, _, _ in relocs)

    rest = sorted(m for t, m in lat if not inside(t))
    print("### A relocation while publishing")
    print()
    print("Produced by `/usr/bin/python3 scripts/bench_relocation.py --seconds %d` on %s, same "
          "machine as above." % (seconds, time.strftime("%Y-%m-%d", time.gmtime())))
    print("`--fsync always`, 64 MiB segments, a count-limited stream of 3.7 MB relocated each time")
    print("the log (~20 MB/s of a stream expiring after 3 s) turns over up to it; a probe XADDs")
    print("once a millisecond on its own connection.")
    print()
    print("| relocation | bytes | writer ms | probe's worst latency from its start to 50 ms after, ms |")
    print("|---|---|---|---|")
    for i, (a, b, nbytes, ms) in enumerate(relocs):
        w = [m for t, m in lat if a <= t <= b + 0.05]
        print("| %d | %d | %.1f | %s |" % (i + 1, nbytes, ms, "%.2f" % max(w) if w else "-"))
    if rest:
        print()
        print("Reference, the same probe outside those windows: %d XADDs, p50 %.2f ms, p99 %.2f ms, "
              "max %.2f ms. INFO: streams_relocated %d, bytes_relocated %d, segments %d at the end."
              % (len(rest), rest[len(rest) // 2], rest[int(len(rest) * 0.99)], rest[-1],
                 info["streams_relocated"], info["bytes_relocated"], info["segments"]))


if __name__ == "__main__":
    main()
