#!/usr/bin/env bash
# test_cli.sh — the real evstore binary: append, dump, verify, exit codes, a corrupt segment
# reported with file and offset, and a folder held by another process refused.
set -u
E=${1:?usage: test_cli.sh path/to/evstore}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
pass=0 fail=0
check() { # name, condition...
  local name=$1; shift
  if "$@"; then pass=$((pass+1)); else fail=$((fail+1)); echo "FAIL: $name" >&2; fi
}

d=$dir/store
id1=$("$E" append --data "$d" s source a type t1 payload '{"x":1}')
id2=$("$E" append --data "$d" s source b type t2 payload 'caf\xc3\xa9')
check "append prints IDs" grep -Eq '^[0-9]+-[0-9]+ [0-9]+-[0-9]+$' <<<"$id1 $id2"
"$E" append --data "$d" --id 5-1 s k v >/dev/null 2>"$dir/err"; rc=$?
check "explicit smaller ID refused with exit 3" [ $rc -eq 3 ]
check "smaller ID message" grep -q "equal or smaller" "$dir/err"
"$E" append --data "$d" "$(printf 'n%.0s' $(seq 401))" k v >/dev/null 2>"$dir/err"; rc=$?
check "a stream name over 400 bytes is an unusable argument: exit 2" [ $rc -eq 2 ]
check "long name message" grep -q "stream name is 401 bytes, the limit is 400" "$dir/err"
out=$("$E" dump --data "$d" s)
check "dump prints two JSON lines" [ "$(printf '%s\n' "$out" | wc -l)" -eq 2 ]
check "dump JSON escapes payload" grep -q '"payload":"{\\"x\\":1}"' <<<"$out"
out=$("$E" dump --data "$d" s --after "$id1")
check "dump --after" grep -q "\"id\":\"$id2\"" <<<"$out"
check "dump --after excludes the start" bash -c "! grep -q '\"id\":\"$id1\"' <<<'$out'"
out=$("$E" dump --data "$d" s --reverse --limit 1)
check "dump --reverse --limit 1 is the newest" grep -q "\"id\":\"$id2\"" <<<"$out"
"$E" verify --data "$d" >"$dir/v"; rc=$?
check "verify clean exits 0" [ $rc -eq 0 ]
check "verify summary" grep -q "0 problems" "$dir/v"
# every command is listed in the top-level help and answers --help
"$E" --help >"$dir/help"
for c in serve publish read tail append dump verify backup restore promote bench bench-resp bench-groups; do
  check "evstore --help lists $c" grep -q "^  $c " "$dir/help"
  "$E" "$c" --help >/dev/null 2>&1; rc=$?
  check "evstore $c --help exits 0" [ $rc -eq 0 ]
done
# --http-cors-origin takes origins without a path, or "*" alone
for bad in "https://app.example/" "app.example" "*,https://app.example"; do
  "$E" serve --data "$dir/never" --http-cors-origin "$bad" >/dev/null 2>"$dir/err"; rc=$?
  check "serve --http-cors-origin '$bad' is an unusable argument" [ $rc -eq 2 ]
  check "serve --http-cors-origin '$bad' says why" grep -q "http-cors-origin" "$dir/err"
done
for bad in "evstore.internal:80" "http://evstore.internal" "*,evstore.internal"; do
  "$E" serve --data "$dir/never" --http-hosts "$bad" >/dev/null 2>"$dir/err"; rc=$?
  check "serve --http-hosts '$bad' is an unusable argument" [ $rc -eq 2 ]
  check "serve --http-hosts '$bad' says why" grep -q "http-hosts" "$dir/err"
done
# numbers are digits only, in range: no unit ("5s" is not 5 ms), sign, junk, or overflow (a
# serve that took one would run: `timeout` ends it, and the check fails)
for bad in "--ack-timeout 5s" "--min-replicas 2x" "--max-clients 99999999999999999999" \
           "--port +7105" "--port 65536" "--http-port -1" "--timeout 1e3" \
           "--retention-max-entries 10k" "--replica-of 127.0.0.1:99999" \
           "--replica-of 127.0.0.1:7000abc" "--replica-of :7000" "--replica-of 7000" \
           "--replica-of 127.0.0.1:http"; do
  # shellcheck disable=SC2086
  timeout 10 "$E" serve --data "$dir/never" $bad >/dev/null 2>"$dir/err"; rc=$?
  check "serve $bad is an unusable argument" [ $rc -eq 2 ]
  check "serve $bad names its flag" grep -q -- "${bad%% *}" "$dir/err"
done
# --server HOST:PORT alike, before any connection: a port of digits only (a service name such as
# "http" was dialled as port 80, "7000abc" as a lookup error, exit 3), the env twin too
for cmd in "backup --out $dir/never --server|" "promote --server|" "publish --server|s f v" \
           "read s --server|" "tail s --server|" "bench-resp --seconds 1 --server|"; do
  for bad in "127.0.0.1:http" "127.0.0.1:0" ":7000"; do
    # shellcheck disable=SC2086
    timeout 10 "$E" ${cmd%|*} "$bad" ${cmd#*|} >/dev/null 2>"$dir/err"; rc=$?
    check "${cmd%% *} --server $bad is an unusable argument" [ $rc -eq 2 ]
    check "${cmd%% *} --server $bad names its flag" grep -q -- "--server" "$dir/err"
  done
done
EVSTORE_SERVER=127.0.0.1:http timeout 10 "$E" read s >/dev/null 2>"$dir/err"; rc=$?
check "EVSTORE_SERVER=127.0.0.1:http is refused as its flag is" [ $rc -eq 2 ]
EVSTORE_ACK_TIMEOUT=5s timeout 10 "$E" serve --data "$dir/never" >/dev/null 2>"$dir/err"; rc=$?
check "EVSTORE_ACK_TIMEOUT=5s is refused as its flag is" [ $rc -eq 2 ]
for bad in "--level x" "--level 0" "--level 3" "--timeout 0" "--timeout 60s"; do
  # shellcheck disable=SC2086
  "$E" backup --data "$d" --out "$dir/never" $bad >/dev/null 2>"$dir/err"; rc=$?
  check "backup $bad is an unusable argument" [ $rc -eq 2 ]
done
check "backup --level with --compress is taken" "$E" backup --data "$d" --out "$dir/lvl" --compress --level 9 --quiet
for bad in "--limit -1" "--limit 1x"; do
  # shellcheck disable=SC2086
  "$E" dump --data "$d" s $bad >/dev/null 2>"$dir/err"; rc=$?
  check "dump $bad is an unusable argument" [ $rc -eq 2 ]
done
check "nothing made for a refused serve" [ ! -e "$dir/never" ]
"$E" verify --bogus >/dev/null 2>&1; rc=$?
check "unusable arguments exit 2" [ $rc -eq 2 ]
"$E" verify --data "$dir/nothing-here" >/dev/null 2>&1; rc=$?
check "missing folder exits 3" [ $rc -eq 3 ]

# an index verify and dump cannot use (deleted here): a private rebuild under $TMPDIR, removed
# after; the store's folder is left as it was
rm -rf "$d/index"
mkdir -p "$dir/tmp"
TMPDIR="$dir/tmp" "$E" verify --data "$d" >"$dir/v" 2>"$dir/err"; rc=$?
check "verify without an index exits 0" [ $rc -eq 0 ]
check "verify without an index says so" grep -q "rebuilding a private copy in $dir/tmp/evstore-index-" "$dir/err"
out=$(TMPDIR="$dir/tmp" "$E" dump --data "$d" s 2>/dev/null)
check "dump without an index prints both" [ "$(printf '%s\n' "$out" | wc -l)" -eq 2 ]
check "the private index is removed" [ -z "$(ls -A "$dir/tmp")" ]
check "no index written into the store" [ ! -e "$d/index" ]

# many entries so that a flip lands inside a record, then flip a byte in the middle
for i in $(seq 1 30); do "$E" append --data "$d" --fsync no s n "$i" payload "some payload bytes $i" >/dev/null; done
seg=$(ls "$d"/log/*.seg | head -1)
# segments are zero-filled: flip a byte in the middle of the records, not of the file
end=$(/usr/bin/python3 -c 'import sys; d=open(sys.argv[1],"rb").read(); print(len(d.rstrip(b"\0")))' "$seg")
off=$((end / 2))
printf '\xff' | dd of="$seg" bs=1 seek=$off conv=notrunc status=none
"$E" verify --data "$d" >"$dir/v" 2>&1; rc=$?
check "verify finds the flip: exit 1" [ $rc -eq 1 ]
check "verify names segment and offset" grep -qE "segment 0+\.seg offset [0-9]+" "$dir/v"
check "verify names the stream" grep -q "stream s" "$dir/v"

# a folder held by another process is refused, naming it
d2=$dir/held
"$E" append --data "$d2" s k v >/dev/null
exec 9>"$d2/LOCK"
flock -x 9
"$E" verify --data "$d2" >/dev/null 2>"$dir/err"; rc=$?
check "held folder refused" [ $rc -eq 4 ]
check "held folder message" grep -q "in use by another process" "$dir/err"
exec 9>&-

# a restore target whose files' paths would not fit in PATH_MAX is refused, never cut short
"$E" backup --data "$d2" --out "$dir/bk" --quiet >/dev/null 2>&1
deep=$dir
while [ $((4075 - ${#deep})) -gt 200 ]; do deep=$deep/$(printf 'e%.0s' {1..250}); done
mkdir -p "$deep"
target=$deep/$(printf 't%.0s' $(seq $((4075 - ${#deep} - 1))))
"$E" restore --from "$dir/bk" --data "$target" >/dev/null 2>"$dir/err"; rc=$?
check "too long a restore path exits 3" [ $rc -eq 3 ]
check "too long a restore path is named" grep -q "path too long" "$dir/err"
check "nothing left beside it" [ -z "$(ls -A "$deep")" ]

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
