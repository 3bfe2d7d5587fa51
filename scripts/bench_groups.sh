#!/usr/bin/env bash
# The consumer-group and retention benchmarks (issue 4), side by side in one run:
#  1. XREADGROUP + XACK round trips (`evstore bench-groups`) with 1 and 8 consumers against
#     evstore --fsync always and Debian's redis-server with appendfsync always;
#  2. publish latency at a steady 10,000 XADD/s (`evstore bench-resp`) while retention deletes
#     a 1 GiB backlog, in rounds interleaved with the same measurement with nothing to delete
#     (the same-run reference), with the server's fdatasync latency in every window.
# Prints a markdown section on stdout.
# Usage: bash scripts/bench_groups.sh [--quick]   (needs build/evstore, redis-server, redis-benchmark)
#        GROUPS_ONLY=1 / RETENTION_ONLY=1 run one half.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench_lib.sh "$@"
info() { redis-cli -p "$1" info evstore | tr -d '\r' | sed -n "s/^$2://p"; }

secs=5; ((quick)) && secs=2
EV=$(port); RA=$(port)
./build/evstore serve --data "$work/ev" --port "$EV" --http-port 0 --fsync always 2>"$work/ev.log" &
pids+=($!)
redis_always "$RA" "$work/ra"
wait_port "$EV"; wait_port "$RA"

if [ -z "${RETENTION_ONLY:-}" ]; then
echo "## Consumer groups and retention (issue 4)"
echo
echo "Produced by \`bash scripts/bench_groups.sh\` on $(date -u +%Y-%m-%d), same machine as above."
echo "Consumers loop \`XREADGROUP GROUP g cN COUNT 1 STREAMS s >\` then \`XACK\` of the entry,"
echo "each on its own connection, for ${secs} s (\`evstore bench-groups --consumers N\`); every"
echo "round trip is two durable writes on both servers. Median of 3 runs (by throughput)."
echo
echo "| consumers | evstore \`--fsync always\` round trips/s (p99 ms) | Redis \`appendfsync always\` round trips/s (p99 ms) | evstore / Redis |"
echo "|---|---|---|---|"
cell() {
  local p=$1 c=$2 runs=()
  for r in 1 2 3; do
    runs+=("$(./build/evstore bench-groups --server "127.0.0.1:$p" --consumers "$c" --seconds "$secs" |
      sed -n 's/^bench=groups .*rps=\([^ ]*\) .*p99_ms=\([^ ]*\).*/\1 \2/p')")
  done
  printf '%s\n' "${runs[@]}" | sort -n | sed -n 2p
}
for c in 1 8; do
  e=$(cell "$EV" "$c"); a=$(cell "$RA" "$c")
  ratio=$(awk -v x="${e%% *}" -v y="${a%% *}" 'BEGIN { printf "%.2f", x / y }')
  echo "| $c | ${e%% *} (${e##* }) | ${a%% *} (${a##* }) | ${ratio}× |"
done
echo
fi
kill "${pids[0]}"; wait "${pids[0]}" 2>/dev/null || true

[ -n "${GROUPS_ONLY:-}" ] && exit 0
# --- retention: a 1 GiB backlog deleted while publishing at 10,000/s ---------------------------
# Interleaved rounds, each on a fresh store with the same backlog: "delete" makes retention
# delete the backlog during the second of three back-to-back 5 s windows, "keep" (the same-run
# reference) measures the same three windows with nothing to delete. The disk's latency drifts
# from minute to minute on this machine, so only the same window of delete and keep rounds, and
# their medians, are compared. Each window also records the server's own fdatasync latency
# (deltas of /metrics' evstore_fsync_seconds histogram), to tell the disk from the server.
backlog_mib=1024; ((quick)) && backlog_mib=128
rounds=3; ((quick)) && rounds=1
n=$((backlog_mib * 1024))  # entries of about 1 KiB
val=$(head -c 1000 /dev/zero | tr '\0' 'x')
# the requests of each millisecond due together: a client waking every 100 us stalls this VM
# 10-15 ms every 100 ms, which would be the p99 of every window (docs/benchmarks.md, Machine)
lat() { ./build/evstore bench-resp --server "127.0.0.1:$1" --rate 10000 --seconds "$secs" --tick-us 1000 | grep '^bench='; }
v() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$2"; }
fsync_window() { # fsync_window BEFORE AFTER: "count p99 slow" of the window's fdatasyncs
  # (p99 as a histogram bucket bound in ms; slow: how many took over 5 ms)
  /usr/bin/python3 - "$1" "$2" <<'PY'
import re, sys
def hist(path):
    return [(float(le), int(c)) for le, c in re.findall(
        r'^evstore_fsync_seconds_bucket\{le="([^"]+)"\} (\d+)', open(path).read(), re.M)]
a, b = hist(sys.argv[1]), hist(sys.argv[2])
d = [(le, cb - ca) for (le, cb), (_, ca) in zip(b, a)]
n = d[-1][1]
def q(p):
    return next((le for le, c in d if c >= p * n), float("inf")) * 1000
slow = n - next(c for le, c in d if le >= 0.005)
print(n, "%g" % q(0.99), slow)
PY
}
ret_round() { # ret_round delete|keep: one round on a fresh store; prints one line per window
  local dir="$work/ret-$1" P H pid
  P=$(port); H=$(port)
  # the backlog is written with --fsync no (only its size matters here), then the server restarts
  ./build/evstore serve --data "$dir" --port "$P" --http-port 0 --fsync no 2>>"$work/ret.log" &
  pid=$!; wait_port "$P"
  redis-benchmark -p "$P" -c 8 -P 64 -n "$n" XADD backlog '*' f "$val" >/dev/null 2>&1
  kill "$pid"; wait "$pid" 2>/dev/null || true
  sync; sleep 2 # the backlog's writeback is not part of the measurement
  local before; before=$(du -sm "$dir/log" | cut -f1)
  ./build/evstore serve --data "$dir" --port "$P" --http-port "$H" --fsync always 2>>"$work/ret.log" &
  pid=$!; wait_port "$P"; wait_port "$H"
  sleep 5 # let the segment preparer finish its zero-filled spare file first
  local w m0 m1 out setter
  for w in before during after; do
    curl -s "http://127.0.0.1:$H/metrics" >"$work/m0"
    setter=
    if [ "$w" = during ] && [ "$1" = delete ]; then
      (sleep 1; redis-cli -p "$P" XRETENTION backlog SET MAXAGE 1ms >/dev/null) &
      setter=$!
    fi
    out=$(lat "$P")
    [ -n "$setter" ] && wait "$setter"
    curl -s "http://127.0.0.1:$H/metrics" >"$work/m1"
    echo "$1 $w $(v p50_ms "$out") $(v p99_ms "$out") $(v p999_ms "$out") $(fsync_window "$work/m0" "$work/m1") $before $(du -sm "$dir/log" | cut -f1) $(info "$P" segments_deleted)"
  done
  kill "$pid"; wait "$pid" 2>/dev/null || true
  rm -rf "$dir"
}
rows=()
for r in $(seq "$rounds"); do # alternate which case goes first
  if ((r % 2)); then order="delete keep"; else order="keep delete"; fi
  for c in $order; do
    while read -r line; do rows+=("$r $line"); done < <(ret_round "$c")
  done
done
echo "Publishing at a steady 10,000 XADD/s over one RESP connection (\`evstore bench-resp --rate"
echo "10000 --seconds $secs --tick-us 1000\`: the requests of each millisecond due together, see"
echo "Machine; \`--fsync always\`, 64 MiB segments), three ${secs} s windows back to back"
echo "on a store holding a backlog of $n entries of 1 KiB (written with \`--fsync no\`, then"
echo "\`sync\`). In a \"delete\" round the backlog expires one second into the second window"
echo "(\`XRETENTION backlog SET MAXAGE 1ms\`) and retention deletes it; a \"keep\" round is the same"
echo "with nothing to delete. $rounds round(s) of each, interleaved, each on a fresh store. fsync columns: the"
echo "server's own fdatasyncs in the window: count, p99 (a histogram bucket bound) and how many took"
echo "over 5 ms (one such stall delays the ~50 requests due meanwhile)."
echo
echo "| round | case | window | p50 ms | p99 ms | p99.9 ms | fsyncs | fsync p99 ≤ ms | fsyncs > 5 ms | log MiB before → after | segments deleted |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
for row in "${rows[@]}"; do
  read -r r c w p50 p99 p999 fn f99 fslow mb ma sd <<<"$row"
  echo "| $r | $c | $w | $p50 | $p99 | $p999 | $fn | $f99 | $fslow | $mb → $ma | $sd |"
done
echo
col() { printf '%s\n' "${rows[@]}" | awk -v c="$1" -v w="$2" -v k="$3" '$2 == c && $3 == w { print $k }' | median; }
echo "| window | delete: median p99 ms | keep: median p99 ms | delete / keep |"
echo "|---|---|---|---|"
for w in before during after; do
  d=$(col delete "$w" 5); k=$(col keep "$w" 5)
  echo "| $w | $d | $k | $(awk -v a="$d" -v b="$k" 'BEGIN { printf "%.2f", a / b }')× |"
done
