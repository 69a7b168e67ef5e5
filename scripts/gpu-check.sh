#!/usr/bin/env bash
# punctum — everything that needs a GPU, in one call on the GPU machine
# (see ../shared/device/README.md; CI has no GPU and never runs this):
#
#   build     Debian packages from .devdeps/ unpacked into /opt/pn (when present), configure
#             with the card's architecture (-DCMAKE_CUDA_ARCHITECTURES=<compute capability>),
#             build punctum (real cuda backend) and the GPU tests, check `ldd` finds everything
#   test      the op-by-op comparison on the real GPU (test_backend_ops_cuda: every op of the
#             cuda backend against the cpu backend, f32 / bf16 / f16, both GEMM paths, both
#             attention paths) and the end-to-end sweep comparison (tests/emu/e2e.py:
#             punctum --backend cuda vs punctum --backend cpu on tiny random models, every
#             HDF5 dataset), plus the CPU-only unit and cuda-emu ctest labels
#   sanitize  compute-sanitizer memcheck (leak check on), racecheck, synccheck and initcheck on
#             a short sweep (knockout, patching, all statistics including patterns) and
#             memcheck / racecheck on the quick op test
#   bench     benchmarks/bench_cuda.py (Llama-3.2-1B-shaped bf16 model, T = 512 .. 16384)
#
#   scripts/gpu-check.sh [build] [test] [sanitize] [bench]     (default: all, in that order)
#
# Reports go to one folder: $OUT when set (the device tool's output folder), else
# benchmarks/results/<date>-<gpu>. At most 8 files: gpu-check.log (everything), summary.md,
# test_backend_ops.txt, e2e.txt, sanitizer.txt, bench_cuda.md, bench_cuda.json.
#
# Each device call may run 10 minutes: on a cold machine run `build test` in one call and
# `sanitize bench` in the next (build outputs stay on a warm machine); carry .devdeps.
#
# Environment: PUNCTUM_GPU_BUILD (build dir, default build-gpu), PUNCTUM_PYTHON (python3 with
# torch, transformers, h5py, numpy; default python3), PUNCTUM_DEPS_ROOT (default /opt/pn),
# BENCH_T (default 512,2048,8192,16384).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

BUILD=${PUNCTUM_GPU_BUILD:-build-gpu}
PY=${PUNCTUM_PYTHON:-python3}
PN=${PUNCTUM_DEPS_ROOT:-/opt/pn}
BENCH_T=${BENCH_T:-512,2048,8192,16384}
PHASES=("$@")
[ ${#PHASES[@]} -gt 0 ] || PHASES=(build test sanitize bench)
for p in "${PHASES[@]}"; do
  case "$p" in build|test|sanitize|bench) ;; *) echo "gpu-check: unknown phase '$p'" >&2; exit 2 ;; esac
done

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "gpu-check: no GPU here (nvidia-smi finds none); run this on the GPU machine" >&2
  exit 77
fi
GPU_NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n 1)
CAP=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -n 1 | tr -d '. ')
SLUG=$(printf '%s' "$GPU_NAME" | tr -cs 'A-Za-z0-9' '-' | sed 's/^-*//; s/-*$//')
RES=${OUT:-$ROOT/benchmarks/results/$(date -u +%Y%m%d)-$SLUG}
mkdir -p "$RES"
RES=$(cd "$RES" && pwd)
LOG=$RES/gpu-check.log
SUMMARY=$RES/summary.md
exec > >(tee -a "$LOG") 2>&1
TEE_PID=$!

COMMIT=$(git rev-parse HEAD 2>/dev/null || echo unknown)
DIRTY=$(git status --porcelain 2>/dev/null | head -n 1)
{
  echo "# gpu-check $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo
  echo "- device: $GPU_NAME (compute capability $CAP)"
  echo "- driver: $(nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -n 1)"
  echo "- nvcc: $(nvcc --version 2>/dev/null | tail -n 1 || echo 'not found')"
  echo "- commit: $COMMIT${DIRTY:+ (working tree has uncommitted changes)}"
  echo "- phases: ${PHASES[*]}"
} >> "$SUMMARY"
echo "gpu-check: $GPU_NAME, sm_$CAP, results in $RES"

STATUS=0
note() { echo "- $*" >> "$SUMMARY"; echo "gpu-check: $*"; }
fail() { STATUS=1; note "FAIL: $*"; }

# ---- dependencies (Debian packages carried in .devdeps, unpacked outside /) -----------------
CMAKE_DEPS=()
setup_deps() {
  if compgen -G ".devdeps/*.deb" >/dev/null; then
    mkdir -p "$PN"
    for f in .devdeps/*.deb; do dpkg -x "$f" "$PN"; done
    local A=x86_64-linux-gnu
    export CMAKE_PREFIX_PATH="$PN/usr${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
    export PKG_CONFIG_PATH="$PN/usr/lib/$A/pkgconfig:$PN/usr/share/pkgconfig"
    export PKG_CONFIG_SYSROOT_DIR="$PN"
    export LD_LIBRARY_PATH="$PN/usr/lib/$A:$PN/usr/lib/$A/hdf5/serial:$PN/usr/lib/$A/openblas-pthread:$PN/lib/$A${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    export LIBRARY_PATH="$PN/usr/lib/$A:$PN/lib/$A${LIBRARY_PATH:+:$LIBRARY_PATH}"
    CMAKE_DEPS=(
      -DCMAKE_PREFIX_PATH="$PN/usr"
      -DHDF5_C_COMPILER_EXECUTABLE=HDF5_C_COMPILER_EXECUTABLE-NOTFOUND
      -DHDF5_C_INCLUDE_DIR="$PN/usr/include/hdf5/serial"
      -DHDF5_hdf5_LIBRARY_RELEASE="$PN/usr/lib/$A/hdf5/serial/libhdf5.so"
      -DOPENBLAS_INCLUDE_DIR="$PN/usr/include/$A/openblas-pthread"
      -DOPENBLAS_LIBRARY="$PN/usr/lib/$A/openblas-pthread/libopenblas.so"
    )
    echo "gpu-check: dependencies unpacked into $PN"
  else
    echo "gpu-check: no .devdeps/*.deb: using the system's packages"
  fi
}
setup_deps

# ---- build ------------------------------------------------------------------------------------
do_build() {
  local t0=$SECONDS
  # (functions run under `|| true`, where set -e does not apply: every step checks itself)
  if ! cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES="$CAP" "${CMAKE_DEPS[@]}"; then
    fail "cmake configure"
    return 1
  fi
  if ! grep -q '^PT_CUDA_BACKEND_BUILT:INTERNAL=ON' "$BUILD/CMakeCache.txt"; then
    fail "configure found no nvcc: the cuda backend would not be built"
    return 1
  fi
  if ! cmake --build "$BUILD" -j "$(nproc)"; then
    fail "build"
    return 1
  fi
  local missing
  missing=$(ldd "$BUILD/punctum" | grep 'not found' || true)
  if [ -n "$missing" ]; then
    fail "ldd $BUILD/punctum: $missing"
    return 1
  fi
  note "build: ok in $((SECONDS - t0)) s (sm_$CAP; $(ldd "$BUILD/punctum" | grep -cE 'cudart|cublas') CUDA libraries linked)"
}

# ---- tests ------------------------------------------------------------------------------------
do_test() {
  local t0=$SECONDS rc=0
  "$BUILD/test_backend_ops_cuda" > "$RES/test_backend_ops.txt" 2>&1 || rc=$?
  tail -n 1 "$RES/test_backend_ops.txt"
  if [ $rc -eq 0 ]; then note "test_backend_ops_cuda: $(tail -n 1 "$RES/test_backend_ops.txt")"
  else fail "test_backend_ops_cuda exit $rc: $(grep -c FAIL "$RES/test_backend_ops.txt" || true) failing rows (test_backend_ops.txt)"; fi

  rc=0
  "$PY" tests/emu/e2e.py --punctum "$BUILD/punctum" --other "$BUILD/punctum" \
      --work "$BUILD/e2e" > "$RES/e2e.txt" 2>&1 || rc=$?
  tail -n 1 "$RES/e2e.txt"
  if [ $rc -eq 0 ]; then note "e2e (cuda vs cpu, every dataset): $(tail -n 1 "$RES/e2e.txt")"
  else fail "e2e exit $rc: $(grep -c ' FAIL' "$RES/e2e.txt" || true) failing rows (e2e.txt)"; fi

  rc=0
  (cd "$BUILD" && ctest -L 'unit' --output-on-failure -j "$(nproc)") || rc=$?
  if [ $rc -eq 0 ]; then note "ctest -L unit: ok"; else fail "ctest -L unit exit $rc"; fi
  note "test phase: $((SECONDS - t0)) s"
}

# ---- compute-sanitizer ------------------------------------------------------------------------
do_sanitize() {
  local t0=$SECONDS
  local CS
  CS=$(command -v compute-sanitizer || true)
  for c in /usr/local/cuda/bin/compute-sanitizer /usr/local/cuda/compute-sanitizer/compute-sanitizer; do
    [ -n "$CS" ] || { [ -x "$c" ] && CS=$c; } || true
  done
  if [ -z "$CS" ]; then fail "compute-sanitizer not found"; return 1; fi
  local M=$BUILD/e2e/models
  if [ ! -d "$M/llama_gqa" ]; then
    "$PY" tests/emu/make_models.py "$M" llama_gqa gpt2 > /dev/null
  fi
  local PAIRS=$BUILD/sanitize.jsonl
  printf '%s\n' \
    '{"id":"p","a_ids":[5,17,9,33,41,8,70,12,3],"b_ids":[5,17,9,33,41,8,70,12,3,44],"target_id":7}' \
    '{"id":"q","a_ids":[11,12,13,14,15,16,17,18],"b_ids":[11,12,13,14,15,16,17,19]}' \
    '{"id":"r","a_ids":[60,61,62,63,64,65,66,67,68,69,70,71,72,73,74,75,76,77,78,79,80,81]}' > "$PAIRS"
  : > "$RES/sanitizer.txt"
  local tool model dtype rc
  for tool in memcheck racecheck synccheck initcheck; do
    for model in llama_gqa gpt2; do
      for dtype in bf16 f32; do
        [ "$tool" = memcheck ] || [ "$model" = llama_gqa ] || continue
        local extra=()
        [ "$tool" = memcheck ] && extra=(--leak-check full)
        rc=0
        {
          echo "=== $tool $model $dtype"
          "$CS" --tool "$tool" "${extra[@]}" --error-exitcode 99 \
            "$BUILD/punctum" run --model "$M/$model" --pairs "$PAIRS" --out "$BUILD/sanitize.h5" --force \
            --backend cuda --dtype "$dtype" --ablate knockout --positions all --patch resid \
            --stats mass,last,resid,topk,lens,patterns --progress never
        } >> "$RES/sanitizer.txt" 2>&1 || rc=$?
        if [ $rc -eq 0 ]; then note "compute-sanitizer $tool on a sweep ($model, $dtype): clean"
        else fail "compute-sanitizer $tool on a sweep ($model, $dtype): exit $rc (sanitizer.txt)"; fi
      done
    done
  done
  for tool in memcheck racecheck; do
    rc=0
    { echo "=== $tool test_backend_ops_cuda --quick"
      "$CS" --tool "$tool" --error-exitcode 99 "$BUILD/test_backend_ops_cuda" --quick | tail -n 3
    } >> "$RES/sanitizer.txt" 2>&1 || rc=$?
    if [ $rc -eq 0 ]; then note "compute-sanitizer $tool on the op test: clean"
    else fail "compute-sanitizer $tool on the op test: exit $rc (sanitizer.txt)"; fi
  done
  note "sanitize phase: $((SECONDS - t0)) s"
}

# ---- benchmarks -------------------------------------------------------------------------------
do_bench() {
  local t0=$SECONDS rc=0
  "$PY" benchmarks/bench_cuda.py --punctum "$BUILD/punctum" --out "$RES" --work "$BUILD/bench-cuda-work" \
      --T "$BENCH_T" || rc=$?
  if [ $rc -eq 0 ] && [ -f "$RES/bench_cuda.md" ]; then
    note "benchmarks: bench_cuda.md / bench_cuda.json"
    { echo; cat "$RES/bench_cuda.md"; } >> "$SUMMARY"
  else
    fail "benchmarks: exit $rc"
  fi
  note "bench phase: $((SECONDS - t0)) s"
}

for p in "${PHASES[@]}"; do
  case "$p" in
    build) do_build || true ;;
    test) do_test || true ;;
    sanitize) do_sanitize || true ;;
    bench) do_bench || true ;;
  esac
done

echo
cat "$SUMMARY"
exec 1>&- 2>&-
wait "$TEE_PID" 2>/dev/null || true # the log is complete before the results are collected
exit $STATUS
