#!/usr/bin/env bash
# The server benchmarks (issue 3), side by side in one run: redis-benchmark's XADD against
# evstore (--fsync always), Debian's redis-server with appendfsync always, and redis-server with
# persistence off; then wrk POSTs to the HTTP API. Prints a markdown section on stdout.
# Usage: bash scripts/bench_server.sh [--quick]   (needs build/evstore, redis-server, wrk)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench_lib.sh "$@"
warm_memory 4096 # the page cache both servers' runs fill, touched once first (bench_lib.sh)

EV=$(port); EVH=$(port); RA=$(port); RN=$(port)
./build/evstore serve --data "$work/ev" --port "$EV" --http-port "$EVH" --fsync always 2>"$work/ev.log" &
pids+=($!)
redis_always "$RA" "$work/ra"
redis_always "$RN" "$work/rn" --appendonly no
wait_port "$EV"; wait_port "$RA"; wait_port "$RN"; wait_port "$EVH"

# one cell: prints "rps p99_ms" (median of 3 runs by rps)
cell() {
  local p=$1 c=$2 P=$3 n=$4 runs=()
  for r in 1 2 3; do
    runs+=("$(redis-benchmark -p "$p" -c "$c" -P "$P" -n "$n" --csv XADD "bench:$r" '*' field value 2>/dev/null |
      awk -F'","' 'NR==2 {gsub(/"/,"",$0); split($0,a,","); print a[2], a[7]}')")
  done
  printf '%s\n' "${runs[@]}" | sort -n | sed -n 2p
}

scale=1
((quick)) && scale=10
echo "## Server (issue 3)"
echo
# publish latency at a steady offered load over RESP, one connection, both servers
secs=5; ((quick)) && secs=2
sync; sleep 1 # a quiet disk: latency first, before the throughput runs leave dirty pages
echo "Publish latency at a steady 10,000 XADD/s over one RESP connection (\`evstore bench-resp"
echo "--rate 10000 --seconds $secs [--tick-us 1000]\`; latency from each request's due time), two"
echo "arrival patterns: each request at its own time (every 100 us), and the requests of each"
echo "millisecond due together at its start (\`--tick-us 1000\`: 10 at a time). The first pattern"
echo "has the client wake 10,000 times a second: on a host that stalls under that (\"Machine\""
echo "above; the storage latency rows' floor shows whether this one does) its p99 is the stall,"
echo "for both servers alike; the second pattern does not wake the client as often. Three rounds,"
echo "servers and patterns in turn, median of each column."
echo
echo "| server | arrivals | p50 ms | p99 ms | p99.9 ms | p99 of each round |"
echo "|---|---|---|---|---|---|"
declare -A lat
for r in 1 2 3; do
  for t in 0 1000; do
    for p in "$EV" "$RA"; do
      lat[$p:$t]+="$(./build/evstore bench-resp --server "127.0.0.1:$p" --rate 10000 --seconds "$secs" --tick-us "$t" | grep '^bench=')"$'\n'
    done
  done
done
for t in 0 1000; do
  for target in "evstore --fsync always:$EV" "Redis appendfsync always:$RA"; do
    name=${target%%:*}; p=${target##*:}
    col() { printf '%s' "${lat[$p:$t]}" | sed -n "s/.* $1=\([^ ]*\).*/\1/p"; }
    med() { col "$1" | median; }
    arr="every 100 us"; [ "$t" = 1000 ] && arr="10 each ms"
    echo "| $name | $arr | $(med p50_ms) | $(med p99_ms) | $(med p999_ms) | $(col p99_ms | paste -sd' ' | sed 's/ / · /g') |"
  done
done
echo

echo
echo "Produced by \`bash scripts/bench_server.sh\` on $(date -u +%Y-%m-%d), same machine as above."
echo "\`redis-benchmark -c C -P P -n N --csv XADD key '*' field value\`, median of 3 runs per cell"
echo "(by throughput), all three servers started by the script, loopback. Redis: Debian's"
echo "$(redis_version)."
echo
echo "| clients / pipeline | evstore \`--fsync always\` rps (p99 ms) | Redis \`appendfsync always\` rps (p99 ms) | Redis, no persistence rps (p99 ms) | evstore / Redis always |"
echo "|---|---|---|---|---|"
for cp in "1 1 $((6000/scale))" "1 16 $((60000/scale))" "50 1 $((60000/scale))" "50 16 $((300000/scale))"; do
  set -- $cp
  e=$(cell "$EV" "$1" "$2" "$3"); a=$(cell "$RA" "$1" "$2" "$3"); n=$(cell "$RN" "$1" "$2" "$3")
  ratio=$(awk -v x="${e%% *}" -v y="${a%% *}" 'BEGIN { printf "%.2f", x / y }')
  echo "| c$1 / P$2 | ${e%% *} (${e##* }) | ${a%% *} (${a##* }) | ${n%% *} (${n##* }) | ${ratio}× |"
done
echo

# HTTP: wrk POSTs of one event and of 100-event arrays
cat > "$work/one.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"source":"bench","type":"t","payload":{"n":1,"s":"0123456789012345678901234567890123456789"}}'
wrk.headers["Content-Type"] = "application/json"
LUA
python3 - "$work/hundred.lua" <<'PY'
import json, sys
ev = {"source": "bench", "type": "t", "payload": {"n": 1, "s": "0123456789" * 4}}
body = json.dumps([ev] * 100).replace("'", "\\'")
open(sys.argv[1], "w").write("wrk.method = 'POST'\nwrk.body = '%s'\nwrk.headers['Content-Type'] = 'application/json'\n" % body)
PY
dur=5; ((quick)) && dur=2
echo "HTTP: \`wrk -t2 -c16 -d${dur}s --latency\` POST /streams/w/events, evstore \`--fsync always\`."
echo
echo "| body | requests/s | events/s | p99 ms |"
echo "|---|---|---|---|"
for kind in one hundred; do
  out=$(wrk -t2 -c16 -d"${dur}s" --latency -s "$work/$kind.lua" "http://127.0.0.1:$EVH/streams/w/events" 2>&1)
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p99=$(awk '/ 99%/ {print $2}' <<<"$out")
  per=1; [ $kind = hundred ] && per=100
  eps=$(awk -v r="$rps" -v p="$per" 'BEGIN { printf "%.0f", r * p }')
  non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
  echo "| $([ $kind = one ] && echo 'one event' || echo '100-event array') | $rps | $eps | $p99${non2xx:+ ($non2xx non-2xx)} |"
done
