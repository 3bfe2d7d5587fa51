# bench_lib.sh — what the server benchmark scripts share; sourced after `cd` to the repo root.
# Sets quick (1 with --quick), work (a temporary folder removed on exit) and pids (processes
# killed on exit); defines port (a free loopback port), wait_port PORT, median (of the
# numbers on stdin, one a line), warm_memory MIB, and redis_always / redis_version (the
# reference Redis).
quick=0
[ "${1:-}" = "--quick" ] && quick=1
work=$(mktemp -d /tmp/evs-bench.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; return 1; }
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

# redis_always PORT DIR [flags...]: start Debian's redis-server on loopback, every write
# fsynced (appendonly, appendfsync always: the reference for evstore --fsync always), its
# files in DIR (made), its pid in pids; later flags win (--appendonly no: no persistence).
redis_always() {
  local port=$1 dir=$2; shift 2
  mkdir -p "$dir"
  redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --appendonly yes --appendfsync always \
    --save '' --daemonize no "$@" >/dev/null &
  pids+=($!)
}
redis_version() { redis-server --version | cut -d' ' -f3 | tr -d 'v='; }

# warm_memory MIB: this VM backs guest memory lazily: the first write into a page the guest
# never touched costs ~3 s/GiB, a page freed and reused ~0.15 s/GiB (docs/benchmarks.md,
# "Replication"). Touch as much memory as a script's runs fill with page cache (a tmpfs file,
# then freed), so that no candidate pays for first touches the others do not.
warm_memory() {
  dd if=/dev/zero of=/dev/shm/evs-bench-warm bs=1M count="$1" status=none 2>/dev/null || true
  rm -f /dev/shm/evs-bench-warm
  sleep 3 # freeing it stalls the machine for a moment (a lag run right after: p99 183 ms)
}
