#!/bin/bash
# bench_relocation_many.sh — what relocating many small streams at once costs the writer
# (docs/architecture.md, Retention; docs/benchmarks.md, "Relocating many small streams").
#
# For each N: one `evstore serve --fsync no` (64 MiB segments); N one-entry streams (with a
# `source` and a `type`, so each has filter groups) created and dropped, N more created, then
# a stream kept by MAXLEN 10 fills the first segment with 1 KiB entries. Retention then frees
# that segment by relocating the N live streams in one request; the server logs its time. The
# reference is the same run's smaller N: time per stream should not grow with N (it did: each
# stream's filter groups were looked for by walking every group in the table).
#
# Usage: bash scripts/bench_relocation_many.sh [--quick]   (needs build/evstore, redis-cli)
# Prints a markdown table on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench_lib.sh
EV=$PWD/build/evstore
sizes="20000 40000 80000"
[ "$quick" = 1 ] && sizes="10000 20000"

echo "Produced by \`bash scripts/bench_relocation_many.sh\` on $(date -u +%F), $(nproc) cores, commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')."
echo
echo "| streams relocated | bytes | writer ms | us per stream |"
echo "|---|---|---|---|"
for n in $sizes; do
  p=$(port)
  "$EV" serve --data "$work/d$n" --port "$p" --http-port 0 --fsync no --segment-bytes 64m \
    2> "$work/log$n" &
  pids+=($!)
  wait_port "$p"
  python3 -c "
n = $n
for i in range(n): print('XADD a%d * source a type t p x' % i)
for i in range(0, n, 100): print('DEL ' + ' '.join('a%d' % j for j in range(i, min(n, i + 100))))
for i in range(n): print('XADD b%d * source a type t p x' % i)
for i in range(70000): print('XADD big MAXLEN 10 * p ' + 'x' * 1000)
" | redis-cli -p "$p" --pipe > /dev/null
  line=
  for _ in $(seq 300); do
    line=$(grep -m1 "relocated" "$work/log$n" || true)
    [ -n "$line" ] && break
    sleep 0.2
  done
  kill "${pids[-1]}"
  wait "${pids[-1]}" 2>/dev/null || true
  if [ -z "$line" ]; then
    echo "| $n | no relocation within 60 s | | |"
    continue
  fi
  # "retention: relocated N small streams (B bytes, T ms) that alone kept ..."
  read -r moved bytes ms < <(echo "$line" | sed -E 's/.*relocated ([0-9]+) small streams \(([0-9]+) bytes, ([0-9.]+) ms\).*/\1 \2 \3/')
  echo "| $moved | $bytes | $ms | $(awk -v m="$ms" -v n="$moved" 'BEGIN { printf "%.1f", m * 1000 / n }') |"
done
