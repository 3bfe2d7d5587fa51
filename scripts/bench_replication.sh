#!/usr/bin/env bash
# The replication benchmarks (issue 6), side by side with their references in one run:
#  1. lag: `evstore bench-resp` at a steady 10,000 XADD/s for 10 s against a leader with one
#     follower (both --fsync always), the requests of each millisecond due together
#     (--tick-us 1000: a client waking every 100 us stalls this VM, docs/benchmarks.md
#     "Machine"); the leader's INFO reports the p50/p99 of the time from a batch becoming
#     visible (acknowledged) to the follower's fsync acknowledgement; and, as a diagnostic run
#     just before it, the same with the follower's folder on a tmpfs (its fsyncs out of the
#     leader's disk, as on a machine of its own; a second --data, the last, wins);
#  2. leader XADD throughput (`redis-benchmark -c 50 -P 16`), median of 9 interleaved rounds
#     (each round's order rotated, odd rounds reversed: the host drifts within a round too):
#     no follower, one follower (async), one follower with --ack all; and two diagnostics:
#     one async follower under `nice -n 19` (it takes only the CPU the leader and the client
#     leave, the nearest this 2-core host comes to a follower on cores of its own), and no
#     follower but a `nice -n 19` busy loop beside the leader (what the second core being busy
#     at all costs the leader here, whatever the busy process does); and the reference, in the
#     same rounds: Debian's redis-server (appendonly, appendfsync always) alone and with one
#     replica on this host (appendfsync always too: a replica as durable as a follower);
#  3. a new follower catching up on a log of about 2 GiB (loaded with --fsync no, then
#     `sync`ed before the clock starts, as a log long written would be), three times, a fresh
#     follower each time, each followed by sequential write with fdatasync (dd) of the same
#     size (this host's disk runs in bursts: one round met whatever the load left of one,
#     docs/benchmarks.md); medians, beside loopback TCP (python3, 1 MiB sends). The log is
#     past --full-sync-bytes, so the new follower copies the store (SNAPSHOT, as a backup);
#     then, as a diagnostic, three more with the leader at --full-sync-bytes 0: the log
#     replayed record by record, as every new follower did before session 42.
# Prints a markdown section on stdout.
# Usage: bash scripts/bench_replication.sh [--quick]   (needs build/evstore, redis-benchmark, redis-server: scripts/deps.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench_lib.sh "$@"

gib=2; ((quick)) && gib=0.25
lsecs=10; ((quick)) && lsecs=3
nreq=1500000; ((quick)) && nreq=50000 # ~2.5 s a run without a follower
now() { date +%s%N; }
secs_since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", (b - a) / 1e9 }'; }
info() { redis-cli -p "$1" info | tr -d '\r' | sed -n "s/^$2://p"; }

serve() { # serve NAME PORT [flags...]: start a server, remember its pid
  local name=$1 port=$2; shift 2
  ${SERVE_PREFIX:-} ./build/evstore serve --data "$work/$name" --port "$port" --http-port 0 "$@" 2>>"$work/$name.log" &
  pids+=($!)
  wait_port "$port"
}
stop_all() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; pids=(); }
caught_up() { # caught_up LEADER_PORT FOLLOWER_PORT: wait until the follower has fsynced the end
  # One python process polls ROLE every 20 ms: a shell loop forking redis-cli and sed took a
  # third of this 2-core machine's CPU from the catch-up it was timing (81 vs 150 MB/s).
  /usr/bin/python3 - "$1" "$(info "$1" log_bytes)" <<'EOF'
import sys, time, redis
r, end = redis.Redis(port=int(sys.argv[1])), int(sys.argv[2])
while True:
    fol = r.execute_command("ROLE")[2]
    if fol and int(fol[0][2]) >= end:
        break
    time.sleep(0.02)
EOF
}

# the page cache these runs fill (the catch-up's two logs and dd's file, and the rest), its
# memory touched once first, as bench_backup.sh does (bench_lib.sh)
warm_memory "$(awk -v g="$gib" 'BEGIN { printf "%d", (g * 3 + 1) * 1024 }')"

# 1. lag
shm=/dev/shm/evs-bench-follower.$$
trap 'cleanup; rm -rf "$shm"' EXIT
lag_run() { # lag_run [follower flags...]: sets lat (publish p50 p99), lag50, lag99, lagn
  local L F
  L=$(port); F=$(port)
  serve lag-l "$L"
  serve lag-f "$F" --replica-of "127.0.0.1:$L" "$@"
  sleep 0.5
  lat=$(./build/evstore bench-resp --server "127.0.0.1:$L" --rate 10000 --seconds "$lsecs" --tick-us 1000 |
        sed -n 's/^bench=resp-latency .*p50_ms=\([^ ]*\) .*p99_ms=\([^ ]*\).*/\1 \2/p')
  lag50=$(info "$L" repl_lag_p50_us); lag99=$(info "$L" repl_lag_p99_us); lagn=$(info "$L" repl_lag_samples)
  stop_all
  rm -rf "$work"/lag-*
}
lag_run --data "$shm"
rm -rf "$shm"
slat=$lat slag50=$lag50 slag99=$lag99 slagn=$lagn
lag_run

# 2. throughput
tput() { # tput PORT: XADD requests/s from redis-benchmark
  redis-benchmark -p "$1" -n "$nreq" -c 50 -P 16 -q XADD s '*' source bench type t payload 0123456789012345678901234567890123456789 2>/dev/null |
    tr '\r' '\n' | sed -n 's/.* \([0-9.]*\) requests per second.*/\1/p' | tail -1
}
redis_serve() { # redis_serve NAME PORT [flags...]: the reference Redis (bench_lib.sh), ready
  redis_always "$2" "$work/$1" "${@:3}"
  wait_port "$2"
}
run_mode() { # run_mode MODE: requests/s of one run, fresh folders
  rm -rf "$work"/t-*
  local L F
  L=$(port); F=$(port)
  case $1 in
    none) serve t-l "$L" ;;
    async) serve t-l "$L"; serve t-f "$F" --replica-of "127.0.0.1:$L"; sleep 0.3 ;;
    all) serve t-l "$L" --ack all --min-replicas 1; serve t-f "$F" --replica-of "127.0.0.1:$L"; sleep 0.5 ;;
    niced) serve t-l "$L"; SERVE_PREFIX="nice -n 19" serve t-f "$F" --replica-of "127.0.0.1:$L"; sleep 0.3 ;;
    busy) serve t-l "$L"; nice -n 19 bash -c 'while :; do :; done' & pids+=($!) ;;
    rnone) redis_serve t-l "$L" ;;
    rrep) redis_serve t-l "$L"; redis_serve t-f "$F" --replicaof 127.0.0.1 "$L"
          for _ in $(seq 100); do
            redis-cli -p "$F" info replication | grep -q '^master_link_status:up' && break
            sleep 0.1
          done ;;
  esac
  tput "$L"
  stop_all
}
# 9 interleaved rounds (this machine drifts over minutes, and within a round: each round
# starts at another mode, odd rounds in reverse), the median of each mode, and the median of
# each mode's ratio to the round's own no-follower run
modes=(none async all niced busy rnone rrep)
for m in "${modes[@]}"; do : >"$work/m.$m"; done
: >"$work/rounds"
for r in 1 2 3 4 5 6 7 8 9; do
  order=()
  for k in "${!modes[@]}"; do order+=("${modes[$(( (k + r) % ${#modes[@]} ))]}"); done
  (( r % 2 )) && mapfile -t order < <(printf '%s\n' "${order[@]}" | tac)
  line=""
  for m in "${order[@]}"; do run_mode "$m" >"$work/v"; v=$(<"$work/v"); echo "$v" >>"$work/m.$m"; line+=" $m=$v"; done
  echo "$line" >>"$work/rounds"
done
t_none=$(median <"$work/m.none"); t_async=$(median <"$work/m.async"); t_all=$(median <"$work/m.all")
t_niced=$(median <"$work/m.niced"); t_busy=$(median <"$work/m.busy")
t_rnone=$(median <"$work/m.rnone"); t_rrep=$(median <"$work/m.rrep")
paired() { # paired MODE [BASE]: median over the rounds of MODE's requests/s over that round's
  # BASE's (none)
  awk -v m="$1" -v b="${2:-none}" '{ for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
                   printf "%.2f\n", v[m] / v[b] }' "$work/rounds" | median
}

# 3. catch-up
L=$(port); F=$(port)
fsb=256m; ((quick)) && fsb=64m # (--quick's 0.25 GiB log is about the default 256m)
serve big-l "$L" --fsync no --full-sync-bytes "$fsb"
pad=$(head -c 900 /dev/urandom | base64 -w0 | head -c 900)
n=$(awk -v g="$gib" 'BEGIN { printf "%d", g * 1073741824 / 1100 }')
redis-benchmark -p "$L" -n "$n" -r 1000 -c 8 -P 64 -q \
  XADD 'agent:__rand_int__' '*' source 'agent-__rand_int__' type tool_call payload "$pad" >/dev/null 2>&1
end=$(info "$L" log_bytes)
sync # the leader was loaded with --fsync no: its log goes to disk before the clock starts
bytes_mb() { awk -v b="$1" -v s="$2" 'BEGIN { printf "%.0f", b / s / 1e6 }'; }
catch_up_rounds() { # three fresh followers of the leader on port L, each beside a dd round
  cu_all=() dd_all=()
  for r in 1 2 3; do
    rm -rf "$work/big-f"
    F=$(port)
    t0=$(now)
    serve big-f "$F" --replica-of "127.0.0.1:$L"
    caught_up "$L" "$F"
    cu_all+=("$(secs_since "$t0")")
    kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true; unset 'pids[-1]'
    t0=$(now); dd if=/dev/zero of="$work/dd" bs=1M count=$(( end / 1048576 )) conv=fdatasync status=none
    dd_all+=("$(secs_since "$t0")")
    rm -f "$work/dd"
  done
  cu_s=$(printf '%s\n' "${cu_all[@]}" | median); dd_s=$(printf '%s\n' "${dd_all[@]}" | median)
  rounds=""
  for r in 0 1 2; do
    rounds+="${rounds:+, }$(bytes_mb "$end" "${cu_all[$r]}")/$(bytes_mb "$end" "${dd_all[$r]}")"
  done
}
catch_up_rounds # past the default --full-sync-bytes: a copy
cp_s=$cu_s cp_dd=$dd_s cp_rounds=$rounds
kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true; unset 'pids[-1]'
serve big-l "$L" --fsync no --full-sync-bytes 0
catch_up_rounds # the same log replayed
rp_s=$cu_s rp_dd=$dd_s rp_rounds=$rounds
stop_all
tcp_s=$(python3 - "$end" <<'EOF'
import socket, sys, threading, time
total = int(sys.argv[1]); buf = b"\0" * (1 << 20)
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
def sink():  # reads to the end: closing early would reset the sender's last send
    c, _ = srv.accept()
    while c.recv(1 << 20):
        pass
    c.close()
t = threading.Thread(target=sink); t.start()
s = socket.create_connection(srv.getsockname()); t0 = time.time(); sent = 0
while sent < total:
    s.sendall(buf); sent += len(buf)
s.close(); t.join(); print("%.2f" % (time.time() - t0))
EOF
)

read -r p50 p99 <<<"$lat"
read -r sp50 sp99 <<<"$slat"
ms() { awk -v u="$1" 'BEGIN { printf "%.2f", u / 1000 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
echo "## Replication (issue 6)"
echo
echo "Produced by \`bash scripts/bench_replication.sh\` on $(date -u +%Y-%m-%d), same machine as above;"
echo "leader and followers on the same machine and disk, all \`--fsync always\` unless noted;"
echo "memory pre-touched (see the script: this VM backs guest memory lazily)."
echo
echo "| measurement | result | reference (same run) | goal |"
echo "|---|---|---|---|"
echo "| replication lag at 10,000 XADD/s, 10 each ms (leader visible → follower fsync ACK, ${lagn} samples) | p50 $(ms "$lag50") ms, p99 $(ms "$lag99") ms | publish latency in the same run: p50 ${p50} ms, p99 ${p99} ms | p99 < 1 ms |"
echo "| the same, the follower's folder on a tmpfs (diagnostic: its fsyncs off the leader's disk, as on a machine of its own; ${slagn} samples) | p50 $(ms "$slag50") ms, p99 $(ms "$slag99") ms | publish latency: p50 ${sp50} ms, p99 ${sp99} ms | — |"
echo "| leader XADD throughput, c50 P16, one follower (async) | ${t_async}/s | no follower ${t_none}/s | $(ratio "$t_async" "$t_none")×, rounds' own ratios: median $(paired async)× (goal ≥ 0.9×) |"
echo "| leader XADD throughput, c50 P16, one follower (async) under \`nice -n 19\` (diagnostic: the follower's CPU left out, as on cores of its own) | ${t_niced}/s | no follower ${t_none}/s | $(ratio "$t_niced" "$t_none")×, rounds' own: $(paired niced)× |"
echo "| leader XADD throughput, c50 P16, no follower, a \`nice -n 19\` busy loop beside it (diagnostic: what a busy second core costs the leader on this host) | ${t_busy}/s | no follower ${t_none}/s | $(ratio "$t_busy" "$t_none")×, rounds' own: $(paired busy)× |"
echo "| reference: Redis $(redis_version), \`appendfsync always\`, c50 P16, one replica on this host (\`appendfsync always\` too) | ${t_rrep}/s | Redis alone ${t_rnone}/s | $(ratio "$t_rrep" "$t_rnone")×, rounds' own: $(paired rrep rnone)× |"
echo "| leader XADD throughput, c50 P16, one follower, \`--ack all\` | ${t_all}/s | no follower ${t_none}/s | $(ratio "$t_all" "$t_none")×, rounds' own: $(paired all)× (goal ≥ 0.5×) |"
gib_s=$(awk -v b="$end" 'BEGIN{printf "%.2f", b/1073741824}')
echo "| a new follower catching up on ${gib_s} GiB of log: a copy of the store (SNAPSHOT, past \`--full-sync-bytes\`; median of 3, fresh followers; each round's MB/s beside its dd's: $cp_rounds) | ${cp_s} s ($(bytes_mb "$end" "$cp_s") MB/s) | loopback TCP ${tcp_s} s ($(bytes_mb "$end" "$tcp_s") MB/s); sequential write + fdatasync ${cp_dd} s ($(bytes_mb "$end" "$cp_dd") MB/s, median) | ≥ 500 MB/s |"
echo "| the same, the log replayed record by record (leader at \`--full-sync-bytes 0\`, as before session 42; diagnostic; rounds: $rp_rounds) | ${rp_s} s ($(bytes_mb "$end" "$rp_s") MB/s) | sequential write + fdatasync ${rp_dd} s ($(bytes_mb "$end" "$rp_dd") MB/s, median) | — |"
