#!/usr/bin/env bash
# The consumer-group and retention benchmarks (issue 4), side by side in one run:
#  1. XREADGROUP + XACK round trips (`evstore bench-groups`) with 1 and 8 consumers against
#     evstore --fsync always and Debian's redis-server with appendfsync always;
#  2. publish latency at a steady 10,000 XADD/s (`evstore bench-resp`) while retention deletes
#     a 1 GiB backlog, against the same measurement with nothing to delete.
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
mkdir -p "$work/ra"
redis-server --port "$RA" --dir "$work/ra" --appendonly yes --appendfsync always --save '' --daemonize no >/dev/null &
pids+=($!)
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
backlog_mib=1024; ((quick)) && backlog_mib=128
n=$((backlog_mib * 1024))  # entries of about 1 KiB
EV2=$(port)
# the backlog is written with --fsync no (only its size matters here), then the server restarts
./build/evstore serve --data "$work/ret" --port "$EV2" --http-port 0 --fsync no 2>"$work/ret.log" &
pid=$!; wait_port "$EV2"
val=$(head -c 1000 /dev/zero | tr '\0' 'x')
redis-benchmark -p "$EV2" -c 8 -P 64 -n "$n" XADD backlog '*' f "$val" >/dev/null 2>&1
kill "$pid"; wait "$pid" 2>/dev/null || true
sync; sleep 2 # the backlog's writeback is not part of the measurement
before=$(du -sm "$work/ret/log" | cut -f1)
./build/evstore serve --data "$work/ret" --port "$EV2" --http-port 0 --fsync always 2>>"$work/ret.log" &
pids+=($!); wait_port "$EV2"
lat() { ./build/evstore bench-resp --server "127.0.0.1:$EV2" --rate 10000 --seconds "$secs" | grep '^bench='; }
v() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$2"; }
sleep 5 # let the segment preparer finish its zero-filled spare file first
base=$(lat)
# the backlog expires: retention deletes it while the next measurement runs
(sleep 1; redis-cli -p "$EV2" XRETENTION backlog SET MAXAGE 1ms >/dev/null) &
setter=$!
during=$(lat)
wait "$setter"
sleep 5
after=$(du -sm "$work/ret/log" | cut -f1)
base2=$(lat)
deleted=$(info "$EV2" segments_deleted); freed=$(info "$EV2" bytes_deleted)
echo "Publishing at a steady 10,000 XADD/s over one RESP connection (\`evstore bench-resp --rate"
echo "10000 --seconds $secs\`, \`--fsync always\`, 64 MiB segments) while retention deletes a backlog of"
echo "$n entries of 1 KiB (${before} MiB of log; expired with \`XRETENTION backlog SET MAXAGE 1ms\`"
echo "one second into the run), against the same run just before and just after, with nothing to"
echo "delete."
echo
echo "| run | p50 ms | p99 ms | p99.9 ms |"
echo "|---|---|---|---|"
echo "| nothing to delete | $(v p50_ms "$base") | $(v p99_ms "$base") | $(v p999_ms "$base") |"
echo "| while deleting | $(v p50_ms "$during") | $(v p99_ms "$during") | $(v p999_ms "$during") |"
echo "| nothing to delete, after | $(v p50_ms "$base2") | $(v p99_ms "$base2") | $(v p999_ms "$base2") |"
echo
echo "Retention deleted $deleted segments ($((freed / 1048576)) MiB); the log folder went from ${before} MiB to ${after} MiB."
