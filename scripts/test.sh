#!/usr/bin/env bash
# Install what is missing, build, and run the whole test suite (ctest: Criterion unit, crash,
# recovery and fault tests, CLI tests against the real binary, fuzz regression replays).
#   --sanitize   also build with ASan+UBSan and run the suite again
#   --fuzz S     also build the libFuzzer targets (clang) and run each for S seconds
#   --all-builds also compile the Debug and Release configurations (gcc warns differently at
#                -O0 and -O3, and -Werror turns a warning into a build a user cannot make)
set -euo pipefail
cd "$(dirname "$0")/.."
sanitize=0
fuzz=0
all_builds=0
while (($#)); do
  case "$1" in
    --sanitize) sanitize=1 ;;
    --fuzz) fuzz=$2; shift ;;
    --all-builds) all_builds=1 ;;
    *) echo "usage: scripts/test.sh [--sanitize] [--fuzz SECONDS] [--all-builds]" >&2; exit 2 ;;
  esac
  shift
done
bash scripts/deps.sh
bash scripts/build.sh build
if ((all_builds)); then
  for t in Debug Release; do
    echo "compiling the $t configuration" >&2
    cmake -S . -B "build-$t" -DCMAKE_BUILD_TYPE=$t >/dev/null
    cmake --build "build-$t" -j "$(nproc)" >/dev/null
  done
fi
ctest --test-dir build --output-on-failure -j 2
if ((sanitize)); then
  bash scripts/build.sh build-asan -DEVSTORE_SANITIZE=ON
  ASAN_OPTIONS=detect_leaks=1 ctest --test-dir build-asan --output-on-failure -j 2
fi
if ((fuzz > 0)); then
  CC=clang bash scripts/build.sh build-fuzz -DCMAKE_C_COMPILER=clang -DEVSTORE_FUZZ=ON -DEVSTORE_TESTS=OFF
  for f in build-fuzz/fuzz/fuzz_*; do
    t=${f##*/fuzz_}
    work=$(mktemp -d)
    echo "fuzzing $t for ${fuzz}s" >&2
    dict=()
    [ -f "fuzz/$t.dict" ] && dict=(-dict="fuzz/$t.dict")
    if ! "$f" -max_total_time="$fuzz" -rss_limit_mb=2048 -malloc_limit_mb=512 -timeout=20 \
        "${dict[@]}" -artifact_prefix="$work/" "$work" "fuzz/corpus/$t" >"$work/log" 2>&1; then
      tail -40 "$work/log" >&2
      echo "fuzz_$t found a crash: $(ls "$work"/crash-* "$work"/leak-* "$work"/timeout-* 2>/dev/null)" >&2
      exit 1
    fi
    grep -E "^Done" "$work/log" >&2 || true
    rm -rf "$work"
  done
fi
echo "all tests passed"
