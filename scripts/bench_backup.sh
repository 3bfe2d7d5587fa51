#!/usr/bin/env bash
# The backup benchmarks (issue 5), side by side with their references in one run:
#  1. a store of about 2 GiB (1 KiB events in 1,000 streams, written by redis-benchmark into
#     `evstore serve --fsync no`), then, median reported:
#     `evstore backup --server` (online, over RESP) vs `cp -r` of the data folder, with and
#     without `sync`, in 5 interleaved rounds; `evstore restore` of it vs `cp -r` of the
#     backup folder likewise; `evstore backup --server --compress` vs `tar -cf - | gzip` and
#     its restore vs `gzip -dc | tar -x`, 3 runs each;
#  2. publish latency at a steady rate (`evstore bench-resp`, server restarted with
#     --fsync always) while each of these runs again and again, each case right after a quiet
#     window of its own: an online backup to the same disk, `cp -r` + `sync` of the data
#     folder (reference), an online backup to a tmpfs (an off-disk target), `cp -r` to a tmpfs
#     (reference), backups paced with --rate to the same disk and to a tmpfs (one of them
#     over its whole length, beside a quiet window as long); then with the
#     server and the publisher on core 0: a backup to a tmpfs with its client on core 1, and
#     the same paced with --rate.
# Everything is in the page cache (23 GiB of RAM): the figures compare CPU and copy paths, and
# evstore fsyncs every file it writes while cp and tar do not (a `sync` after them is timed
# separately). Prints a markdown section on stdout.
# Usage: bash scripts/bench_backup.sh [--quick]   (needs build/evstore, redis-benchmark)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench_lib.sh "$@"

gib=2; ((quick)) && gib=0.25
brate=50m # --rate of the rate-limited backups in the latency measurement
prate=20m # --rate of the paced backup to a tmpfs, pinned (a probe, session 31: 10-20m kept the
          # p99 within the quiet's own spread, 50m 1.3-1.6 ms, 200m 2-3 ms against 0.5-1.0)
srate=10m # --rate of the paced backup to a tmpfs, not pinned (session 43's probe: 5-10m within
          # the quiet windows' own spread)
now() { date +%s%N; }
secs_since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", (b - a) / 1e9 }'; }
mbs() { awk -v b="$1" -v s="$2" 'BEGIN { printf "%.0f", b / s / 1048576 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b / a }'; }

EV=$(port)
./build/evstore serve --data "$work/data" --port "$EV" --http-port 0 --fsync no 2>"$work/ev.log" &
pids+=($!)
wait_port "$EV"
pad=$(head -c 900 /dev/urandom | base64 -w0 | head -c 900)
n=$(awk -v g="$gib" 'BEGIN { printf "%d", g * 1073741824 / 1100 }')
redis-benchmark -p "$EV" -n "$n" -r 1000 -c 8 -P 64 -q \
  XADD 'agent:__rand_int__' '*' source 'agent-__rand_int__' type tool_call payload "{\"n\":__rand_int__,\"text\":\"$pad\"}" >/dev/null 2>&1
# restart durable (the fill ran with --fsync no for speed): latency is measured as deployed
kill "${pids[0]}"; wait "${pids[0]}" 2>/dev/null || true; pids=()
./build/evstore serve --data "$work/data" --port "$EV" --http-port 0 --fsync always 2>>"$work/ev.log" &
pids+=($!)
wait_port "$EV"
bytes=$(du -sb "$work/data" | cut -f1)
# the active segment is zero-filled to 64 MiB: count what a backup copies, the log's bytes
logb=$(redis-cli -p "$EV" info evstore | tr -d '\r' | sed -n 's/^log_bytes://p')

run3() { # run3 NAME CMD...: three timed runs (each after `rm -rf` of its output), median seconds
  local name=$1; shift
  for r in 1 2 3; do
    rm -rf "$work/out"
    local t0; t0=$(now)
    "$@" >/dev/null 2>&1
    secs_since "$t0"; echo
  done | median
}

# as much memory as the runs below fill with page cache (bench_lib.sh)
warm_memory $(( bytes * 3 / 1048576 ))

t1() { # t1 CMD...: seconds one run takes, after `rm -rf` of $work/out and a sync
  rm -rf "$work/out"; sync
  local t0; t0=$(now)
  "$@" >/dev/null 2>&1
  secs_since "$t0"
}
# rounds SRC CMD...: 5 interleaved rounds (the disk drifts) of `cp -r SRC`, `cp -r SRC && sync`
# and CMD, each into $work/out; prints the three medians
rounds() {
  local src=$1; shift
  : >"$work/t.a"; : >"$work/t.b"; : >"$work/t.c"
  for r in 1 2 3 4 5; do
    { t1 cp -r "$src" "$work/out"; echo; } >>"$work/t.a"
    { t1 sh -c "cp -r '$src' '$work/out' && sync"; echo; } >>"$work/t.b"
    { t1 "$@"; echo; } >>"$work/t.c"
  done
  echo "$(median <"$work/t.a") $(median <"$work/t.b") $(median <"$work/t.c")"
}
read -r cp_s cps_s bk_s <<<"$(rounds "$work/data" ./build/evstore backup --server "127.0.0.1:$EV" --out "$work/out" --quiet)"
tgz_s=$(run3 tgz sh -c "mkdir -p '$work/out' && tar -C '$work/data' -cf - . | gzip > '$work/out/b.tgz'")
tgz_bytes=$(du -sb "$work/out/b.tgz" | cut -f1)
tgz_x_s=$( for r in 1 2 3; do rm -rf "$work/x"; mkdir -p "$work/x"; t0=$(now); gzip -dc "$work/out/b.tgz" | tar -C "$work/x" -xf -; secs_since "$t0"; echo; done | median )
rm -rf "$work/x" "$work/out"

rm -rf "$work/out" "$work/b"; ./build/evstore backup --server "127.0.0.1:$EV" --out "$work/b" --quiet >/dev/null
bk_bytes=$(du -sb "$work/b" | cut -f1)
read -r cpb_s cpbs_s rs_s <<<"$(rounds "$work/b" ./build/evstore restore --from "$work/b" --data "$work/out" --quiet)"
rm -rf "$work/x" "$work/out"

bz_s=$(run3 backupz ./build/evstore backup --server "127.0.0.1:$EV" --out "$work/out" --compress --quiet)
rm -rf "$work/bz"; ./build/evstore backup --server "127.0.0.1:$EV" --out "$work/bz" --compress --quiet >/dev/null
bz_bytes=$(du -sb "$work/bz" | cut -f1)
rz_s=$( for r in 1 2 3; do rm -rf "$work/x"; t0=$(now); ./build/evstore restore --from "$work/bz" --data "$work/x" --quiet >/dev/null; secs_since "$t0"; echo; done | median )
rm -rf "$work/x" "$work/out" "$work/b" "$work/bz"
# the copies above wrote and freed gigabytes: their writeback and the file system's discards
# of what was removed must not land in the "quiet" window (session 9: quiet p99 123 ms)
sync; sleep 15

# publish latency at a steady rate: quiet, and while each copy below runs over and over
# the requests of each millisecond due together (2 at a time): a client waking at kHz rates
# stalled an earlier host every 100 ms (docs/benchmarks.md, Machine), which was every row's p99
lat() { ${PIN:+taskset -c "$PIN"} ./build/evstore bench-resp --server "127.0.0.1:$EV" --rate 2000 --seconds "$1" --tick-us 1000 |
        sed -n 's/^bench=resp-latency .*p50_ms=\([^ ]*\) .*p99_ms=\([^ ]*\).*/\1 \2/p'; }
lsecs=10; ((quick)) && lsecs=4
# a paced backup runs for minutes: its window is longer, so that the snapshot's start (the
# index copy, once per backup, at full speed) weighs in it about as it would over the backup
plsecs=30; ((quick)) && plsecs=8
shm=/dev/shm/evs-bench-out.$$
during() { # during CMD: the latency while sh -c CMD runs again and again (the last one finishes)
  rm -f "$work/stop"
  ( while [ ! -e "$work/stop" ]; do sh -c "$1" >/dev/null 2>&1; done ) &
  local bp=$! l
  l=$(lat "$lsecs")
  touch "$work/stop"; wait "$bp" 2>/dev/null || true
  rm -rf "$work/o" "$shm"
  echo "$l"
}
bk="./build/evstore backup --server 127.0.0.1:$EV --quiet"
# Each case runs right after a quiet window of its own: on this shared host a quiet window's p99
# alone swings 1.5-5.5 ms from one to the next (session 43), so each case is compared with the
# quiet just before it and with the median of every quiet window of the run.
: >"$work/quiets"; : >"$work/pin_quiets"
quiet() { # quiet FILE: a quiet window, kept in FILE too
  local l; l=$(lat "$lsecs"); echo "$l" >>"$1"; echo "$l"; }
paced() { # paced OUT RATE [taskset prefix...]: latency while one paced backup outlasts the window
  local out=$1 rate=$2 bpid l; shift 2
  rm -rf "$out"
  "$@" ./build/evstore backup --server "127.0.0.1:$EV" --out "$out" --rate "$rate" --quiet >/dev/null 2>&1 &
  bpid=$! # stopped after the window (SIGTERM: it cleans up)
  l=$(lat "$plsecs")
  kill "$bpid" 2>/dev/null || true
  wait "$bpid" 2>/dev/null || true
  rm -rf "$out"
  echo "$l"
}
q_busy=$(quiet "$work/quiets"); busy_lat=$(during "rm -rf '$work/o'; $bk --out '$work/o'")
q_cpd=$(quiet "$work/quiets"); cpd_lat=$(during "rm -rf '$work/o'; cp -r '$work/data' '$work/o' && sync")
q_shm=$(quiet "$work/quiets"); shm_lat=$(during "rm -rf '$shm'; $bk --out '$shm'")
q_cps=$(quiet "$work/quiets"); cps_lat=$(during "rm -rf '$shm'; cp -r '$work/data' '$shm'")
q_rate=$(quiet "$work/quiets"); rate_lat=$(paced "$work/or" "$brate")
q_srate=$(quiet "$work/quiets"); srate_lat=$(paced "$shm" "$srate")
# The whole of a paced backup: one window from its start to (about) its end, the log's bytes
# at the pace, against a quiet window of the same length just before it. "During an online
# backup" is all of it; the 30 s window above weighs its start several times over.
wsecs=$(awk -v b="$logb" -v r="${srate%m}" 'BEGIN { printf "%d", b / (r * 1048576) }')
q_whole=$(plsecs=$wsecs; lat "$wsecs"); whole_lat=$(plsecs=$wsecs; paced "$shm" "$srate")
# A backup client on another machine takes none of the server's CPU; here it shares the two
# cores with the server and the publisher, and that alone multiplies the p99 (a cp -r to a
# tmpfs, which never touches the server, does it too). To see what the server's side of a
# backup costs: the server (every thread) and the publisher on core 0, the backup client on
# core 1, against quiet windows pinned the same way.
pin_shm_lat="" pin_rate_lat=""
if (( $(nproc) >= 2 )) && command -v taskset >/dev/null; then
  taskset -a -p -c 0 "${pids[0]}" >/dev/null
  export PIN=0
  q_pshm=$(quiet "$work/pin_quiets"); pin_shm_lat=$(during "rm -rf '$shm'; taskset -c 1 $bk --out '$shm'")
  q_prate=$(quiet "$work/pin_quiets"); pin_rate_lat=$(paced "$shm" "$prate" taskset -c 1)
  unset PIN
  taskset -a -p -c "0-$(( $(nproc) - 1 ))" "${pids[0]}" >/dev/null
fi

gb() { awk -v b="$1" 'BEGIN { printf "%.2f GiB", b / 1073741824 }'; }
echo "## Backup and restore (issue 5)"
echo
echo "Produced by \`bash scripts/bench_backup.sh\` on $(date -u +%Y-%m-%d), same machine as above."
echo "Store: $(gb "$bytes") on disk ($(gb "$logb") of records; $n events of about 1 KiB in 1,000"
echo "streams; the payload repeats one random 900-byte text, so it compresses well for both zlib"
echo "and gzip). All in the page cache, memory pre-touched (see the script). Uncompressed: median of"
echo "5 interleaved rounds (\`cp -r\`, \`cp -r && sync\`, evstore); compressed: median of 3 runs."
echo "Rates are store bytes / time."
echo "evstore fsyncs every file it writes and CRC-checks every byte; \`cp -r\` does neither (it"
echo "copies inside the kernel with copy_file_range), so it is shown alone and followed by \`sync\`."
echo
echo "| operation | evstore | reference (same run) | evstore / reference | goal |"
echo "|---|---|---|---|---|"
echo "| backup, uncompressed (online, over RESP) | ${bk_s} s ($(mbs "$bytes" "$bk_s") MB/s) | \`cp -r\` ${cp_s} s ($(mbs "$bytes" "$cp_s") MB/s); \`cp -r && sync\` ${cps_s} s | $(ratio "$bk_s" "$cp_s")×; $(ratio "$bk_s" "$cps_s")× | ≥ 0.8× \`cp -r\` |"
echo "| backup, \`--compress\` ($(gb "$bz_bytes")) | ${bz_s} s ($(mbs "$bytes" "$bz_s") MB/s) | \`tar \| gzip\` ${tgz_s} s ($(gb "$tgz_bytes")) | $(ratio "$bz_s" "$tgz_s")× | ≥ 1× |"
echo "| restore, uncompressed | ${rs_s} s ($(mbs "$bytes" "$rs_s") MB/s) | \`cp -r\` of the backup ${cpb_s} s; with \`sync\` ${cpbs_s} s | $(ratio "$rs_s" "$cpb_s")×; $(ratio "$rs_s" "$cpbs_s")× | ≥ 0.8× \`cp -r\` |"
echo "| restore, compressed | ${rz_s} s ($(mbs "$bytes" "$rz_s") MB/s) | \`gzip -dc \| tar -x\` ${tgz_x_s} s | $(ratio "$rz_s" "$tgz_x_s")× | ≥ 1× |"
echo
qmed() { awk '{ print $2 }' "$1" | median; }
qrange() { awk '{ print $2 }' "$1" | sort -n | awk '{ v[NR] = $1 } END { printf "%s-%s", v[1], v[NR] }'; }
q99=$(qmed "$work/quiets")
row() { # row LABEL "P50 P99" "QUIET_P50 QUIET_P99" MEDIAN_QUIET_P99
  local p50 p99 a50 a99; read -r p50 p99 <<<"$2"; read -r a50 a99 <<<"$3"
  echo "| $1 | $p50 | $p99 | $a99 | $(ratio "$a99" "$p99")× | $(ratio "$4" "$p99")× |"; }
echo "Publish latency at a steady 2,000 XADD/s over one connection (\`evstore bench-resp --tick-us 1000\`, ${lsecs} s"
echo "per window, \`--fsync always\`), while each copy runs again and again; a paced backup runs"
echo "once, outlasting a window of ${plsecs} s begun with it (its snapshot's start included). The"
echo "\`cp -r\` rows are the same run's reference for what any copy of the folder does to the"
echo "server (the same disk, or only reading the store and using CPU when the target is a tmpfs, as"
echo "a backup to another machine would). Each case runs right after a"
echo "quiet window of its own (no copy), and is compared with it and with the median of the run's"
echo "quiet windows: quiet p99 $(qrange "$work/quiets") ms, median ${q99} ms$( [ -s "$work/pin_quiets" ] && echo "; pinned $(qrange "$work/pin_quiets") ms, median $(qmed "$work/pin_quiets") ms")."
echo "Goal: p99 within 20 % of quiet during an online backup."
echo
echo "| while | p50 ms | p99 ms | quiet p99 just before, ms | p99 / that | p99 / median quiet p99 |"
echo "|---|---|---|---|---|---|"
row "online backup, to the same disk" "$busy_lat" "$q_busy" "$q99"
row "\`cp -r\` of the data folder + \`sync\`, same disk (reference)" "$cpd_lat" "$q_cpd" "$q99"
row "online backup, to a tmpfs (an off-disk target)" "$shm_lat" "$q_shm" "$q99"
row "\`cp -r\` of the data folder to a tmpfs (reference)" "$cps_lat" "$q_cps" "$q99"
row "online backup with \`--rate $brate\`, same disk" "$rate_lat" "$q_rate" "$q99"
row "online backup with \`--rate $srate\`, to a tmpfs" "$srate_lat" "$q_srate" "$q99"
row "the same, the whole backup (a ${wsecs} s window from its start, against a quiet window of ${wsecs} s)" "$whole_lat" "$q_whole" "$q99"
if [ -n "$pin_shm_lat" ]; then
  pq99=$(qmed "$work/pin_quiets")
  row "the server and the publisher on core 0, an online backup to a tmpfs with its client on core 1 (as from another machine; vs pinned quiet windows)" "$pin_shm_lat" "$q_pshm" "$pq99"
  row "the same with \`--rate $prate\`" "$pin_rate_lat" "$q_prate" "$pq99"
fi
