#!/bin/bash
# bench_many_streams.sh — what an idle store of many streams costs a publisher
# (storage/retention.c R9; docs/benchmarks.md, "Many streams").
#
# Two `evstore serve --fsync no` side by side: one holding N one-entry streams (created through
# redis-cli --pipe), one empty (the same run's reference). For each: the retention thread's CPU
# over 10 s of idling (it passes once a second), then `redis-benchmark -c 1 -n 30000 XADD` to a
# stream of its own, three runs: throughput and the worst latency (a pass that holds the store's
# lock stalls the publish behind it).
#
# Usage: bash scripts/bench_many_streams.sh [--quick]   (needs build/evstore, redis-tools)
# Prints a markdown table on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench_lib.sh
EV=$PWD/build/evstore
n=500000
[ "$quick" = 1 ] && n=100000

ticks() { # CPU ticks (user + system) of the server's retention thread
  for t in /proc/"$1"/task/*; do
    [ "$(cat "$t/comm")" = evs-retention ] && awk '{ print $14 + $15 }' "$t/stat"
  done
}

echo "Produced by \`bash scripts/bench_many_streams.sh\` on $(date -u +%F), $(nproc) cores, commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')."
echo
echo "| store | retention thread CPU, % of a core | XADD rps, c1 (median of 3) | worst XADD latency ms (each run) |"
echo "|---|---|---|---|"
for which in many empty; do
  p=$(port)
  "$EV" serve --data "$work/$which" --port "$p" --http-port 0 --fsync no 2> "$work/$which.log" &
  pid=$!
  pids+=("$pid")
  wait_port "$p"
  if [ "$which" = many ]; then
    python3 -c "
for i in range($n): print('XADD a%d * source a type t p x' % i)" | redis-cli -p "$p" --pipe > /dev/null
  fi
  sleep 2
  a=$(ticks $pid)
  sleep 10
  b=$(ticks $pid)
  cpu=$(awk -v a="$a" -v b="$b" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.1f", (b - a) / hz / 10 * 100 }')
  rps=() worst=()
  for _ in 1 2 3; do
    line=$(redis-benchmark -p "$p" -c 1 -n 30000 --csv XADD hot '*' f v 2>/dev/null | tail -1 | tr -d '"')
    rps+=("$(echo "$line" | cut -d, -f2)")
    worst+=("$(echo "$line" | cut -d, -f8)")
  done
  label="$n streams"
  [ "$which" = empty ] && label="empty (reference)"
  echo "| $label | $cpu | $(printf '%s\n' "${rps[@]}" | median) | ${worst[*]} |"
  kill $pid
  wait $pid 2>/dev/null || true
done
