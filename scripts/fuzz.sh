#!/usr/bin/env bash
# Build every libFuzzer harness (tests/fuzz/fuzz_*.c) with clang + ASan + UBSan and run each
# one for FUZZ_SECONDS (default 30) on a scratch copy of its seed corpus
# tests/fuzz/corpus/<name without fuzz_>. Exits non-zero if any fuzzer crashes, leaks, times
# out or fails to build.
#
#   scripts/fuzz.sh                      # all fuzzers
#   scripts/fuzz.sh safetensors config   # only these
#   FUZZ_SECONDS=300 scripts/fuzz.sh
#
# Environment: FUZZ_SECONDS, FUZZ_BUILD_DIR (default build-fuzz), FUZZ_JOBS (build jobs, 2),
# FUZZ_ARGS (extra libFuzzer flags). A crashing input is kept under
# $FUZZ_BUILD_DIR/fuzz-work/<name>/artifacts/; reproduce with `$FUZZ_BUILD_DIR/fuzz_<name> FILE`.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
SECS=${FUZZ_SECONDS:-30}
BUILD=${FUZZ_BUILD_DIR:-build-fuzz}
JOBS=${FUZZ_JOBS:-2}
EXTRA=${FUZZ_ARGS:-}

command -v clang >/dev/null || { echo "fuzz.sh: clang not found (apt-get install clang libclang-rt-14-dev)" >&2; exit 2; }

SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
mkdir -p "$BUILD"
# the library is instrumented for coverage (fuzzer-no-link); the harnesses add -fsanitize=fuzzer.
# The coverage counters inside the cpu backend's `omp simd` loops stop clang vectorising them,
# which it reports as a warning (-Wpass-failed): true of this build only, so not shown.
cmake -S . -B "$BUILD" -DPT_FUZZ=ON -DPT_CUDA=OFF -DPT_CUDA_EMU=OFF -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  "-DCMAKE_C_FLAGS=-fsanitize=fuzzer-no-link $SAN -Wno-pass-failed" "-DCMAKE_EXE_LINKER_FLAGS=$SAN" \
  >"$BUILD/configure.log" 2>&1 \
  || { cat "$BUILD/configure.log" >&2; echo "fuzz.sh: cmake configure failed" >&2; exit 2; }

# which fuzzers: the arguments, or every tests/fuzz/fuzz_*.c
names=()
if [ $# -gt 0 ]; then
  for n in "$@"; do names+=("${n#fuzz_}"); done
else
  for src in tests/fuzz/fuzz_*.c; do
    [ -e "$src" ] || continue
    n=$(basename "$src" .c)
    names+=("${n#fuzz_}")
  done
fi
[ ${#names[@]} -gt 0 ] || { echo "fuzz.sh: no fuzzers found in tests/fuzz" >&2; exit 2; }

targets=()
for n in "${names[@]}"; do targets+=("fuzz_$n"); done
cmake --build "$BUILD" -j"$JOBS" --target "${targets[@]}"

failed=()
for n in "${names[@]}"; do
  bin="$BUILD/fuzz_$n"
  if [ ! -x "$bin" ]; then
    echo "fuzz.sh: $bin was not built" >&2
    failed+=("$n(build)")
    continue
  fi
  work="$BUILD/fuzz-work/$n"
  rm -rf "$work"
  mkdir -p "$work/corpus" "$work/artifacts"
  if [ -d "tests/fuzz/corpus/$n" ]; then
    cp -R "tests/fuzz/corpus/$n/." "$work/corpus/"
  else
    echo "fuzz.sh: warning: no seed corpus tests/fuzz/corpus/$n" >&2
  fi
  dict=()
  [ -f "tests/fuzz/$n.dict" ] && dict=("-dict=tests/fuzz/$n.dict")
  echo "== fuzz_$n: ${SECS}s, $(find "$work/corpus" -type f | wc -l) seeds"
  # shellcheck disable=SC2086
  if "$bin" "$work/corpus" -max_total_time="$SECS" -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 \
       -artifact_prefix="$work/artifacts/" "${dict[@]}" $EXTRA >"$work/log.txt" 2>&1; then
    grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb)|^#[0-9]+.*DONE" "$work/log.txt" || true
    echo "   ok (corpus now $(find "$work/corpus" -type f | wc -l) inputs; log $work/log.txt)"
  else
    echo "   FAILED: fuzz_$n (log $work/log.txt)" >&2
    tail -n 40 "$work/log.txt" >&2
    ls -1 "$work/artifacts" >&2 || true
    failed+=("$n")
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz.sh: FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz.sh: all ${#names[@]} fuzzers ran ${SECS}s without a finding"
