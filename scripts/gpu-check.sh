#!/usr/bin/env bash
# punctum — everything that needs a GPU, in ONE device call of at most ~9 minutes on a fresh
# H100/H200 (../shared/device/README.md; CI has no GPU and never runs this). Phases, in order,
# each under its own timeout inside an overall budget:
#
#   deps      unpack the Debian packages carried in .devdeps/ into /opt/pn (no registry there)
#   build     configure for this card's architecture only (no emulation build), build punctum,
#             test_backend_ops_cuda and test_wrappers_cuda with all cores; `ldd` must resolve
#             every library
#   ops       test_backend_ops_cuda: every op of the cuda backend against the cpu backend
#             (f32 / bf16 / f16, both GEMM paths, both attention paths); test_wrappers_cuda:
#             ldmatrix / cp.async / mma.sync on the hardware against the references the
#             emulation's models are tested with
#   e2e       tests/emu/e2e.py on two tiny models (GQA llama, gpt2): whole sweeps, cuda vs cpu,
#             every HDF5 dataset
#   long      tests/emu/gpu_long.py: T = 4096 with a 128256-token vocabulary, cuda vs cpu
#   sanitize  compute-sanitizer memcheck and racecheck on punctum's own kernels only (k_*: the
#             cuBLAS kernels are not instrumented), on the quick op test, the wrapper test and
#             two short sweeps;
#             "not run" where the machine refuses compute-sanitizer (e.g. gVisor)
#   bench     benchmarks/bench_cuda.py: SPEC §8 with the time that is left (punctum's sweep time
#             measured in its own process, transformers eager + statistics and cuBLASLt with
#             CUDA events on the same GPU)
#
#   scripts/gpu-check.sh [PHASE ...]          (default: all of them, in that order)
#
# On the device tool: carry .devdeps (../shared/device/fetch-debs.sh), timeout_s 560, command
# `GPU_CHECK_COMMIT=<git rev-parse HEAD here> scripts/gpu-check.sh`. Without a GPU (here), `build` still works (GPU_CHECK_ARCH, default
# 90) and the GPU phases fail at once, saying why.
#
# Results, at most 8 files, in $OUT when set (the device tool's output folder) or else
# benchmarks/results/<date>-<gpu>: summary.md (also printed last), gpu-check.log (everything),
# ops.txt, e2e.txt, long.txt, sanitizer.txt, bench_cuda.md, bench_cuda.json.
#
# Environment: GPU_CHECK_BUDGET (seconds for all phases, default 530), GPU_CHECK_<PHASE>_S (a
# phase's own limit), GPU_CHECK_ARCH (architecture without a GPU), PUNCTUM_GPU_BUILD (build dir,
# default build-gpu), PUNCTUM_PYTHON (python3 with torch, transformers, h5py, numpy),
# PUNCTUM_DEPS_ROOT (default /opt/pn), BENCH_T (default 512,2048,4096,8192,32768),
# GPU_CHECK_E2E_MODELS (default llama_gqa,gpt2), GPU_CHECK_COMMIT (the commit to report, where
# the tree has no .git).
# shellcheck disable=SC2317  # (the phase functions are called indirectly: "phase_$2")
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
SELF="$ROOT/scripts/gpu-check.sh"
ALL_PHASES=(deps build ops e2e long sanitize bench)

BUILD=${PUNCTUM_GPU_BUILD:-build-gpu}
case "$BUILD" in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
export BUILD
export PY=${PUNCTUM_PYTHON:-python3}
export PN=${PUNCTUM_DEPS_ROOT:-/opt/pn}
export BENCH_T=${BENCH_T:-512,2048,4096,8192,32768}
export E2E_MODELS=${GPU_CHECK_E2E_MODELS:-llama_gqa,gpt2}
export PYTHONUNBUFFERED=1
A=x86_64-linux-gnu
# punctum's own processes find the unpacked libraries through this (never python / torch)
export PN_LIBS="$PN/usr/lib/$A:$PN/usr/lib/$A/hdf5/serial:$PN/usr/lib/$A/openblas-pthread:$PN/lib/$A"

# ---- helpers (also used by the phase processes) ------------------------------------------------

has_gpu() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }
need_gpu() {
  has_gpu && return 0
  echo "gpu-check: $1: no GPU here (nvidia-smi finds none): this phase runs on the GPU machine"
  exit 3
}
# run one of punctum's binaries with the unpacked libraries
pn() { LD_LIBRARY_PATH="$PN_LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$@"; }
note() { echo "gpu-check: $*"; }
# one line of the phase table: status, detail
row() { printf '%s\t%s\n' "$1" "$2" > "$BUILD/phase.$PHASE.row"; }

# a wrapper that gives punctum its libraries, for the Python drivers (e2e.py, bench_cuda.py)
make_wrapper() {
  mkdir -p "$BUILD/bin"
  cat > "$BUILD/bin/punctum" <<EOF
#!/bin/sh
LD_LIBRARY_PATH="$PN_LIBS\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec "$BUILD/punctum" "\$@"
EOF
  chmod +x "$BUILD/bin/punctum"
}

# ---- phases (each runs as `gpu-check.sh __phase NAME`, under `timeout`) -----------------------

phase_deps() {
  if ! compgen -G ".devdeps/*.deb" >/dev/null; then
    row "skipped" "no .devdeps/*.deb: the system's packages are used"
    return 0
  fi
  mkdir -p "$PN"
  local n=0 f
  for f in .devdeps/*.deb; do dpkg -x "$f" "$PN" && n=$((n + 1)); done
  row "ok" "$n packages unpacked into $PN"
}

phase_build() {
  local arch
  if has_gpu; then
    arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -n 1 | tr -d '. ')
  else
    arch=${GPU_CHECK_ARCH:-90}
  fi
  local nvcc
  nvcc=$(command -v nvcc || true)
  [ -n "$nvcc" ] || nvcc=/usr/local/cuda/bin/nvcc
  if [ ! -x "$nvcc" ]; then
    row "FAIL" "nvcc not found (PATH, /usr/local/cuda/bin)"
    return 1
  fi
  local gen=() deps=()
  command -v ninja >/dev/null 2>&1 && gen=(-G Ninja)
  if [ -d "$PN/usr/include" ]; then
    deps=(-DCMAKE_PREFIX_PATH="$PN/usr"
          -DHDF5_C_COMPILER_EXECUTABLE=HDF5_C_COMPILER_EXECUTABLE-NOTFOUND
          -DHDF5_C_INCLUDE_DIR="$PN/usr/include/hdf5/serial"
          -DHDF5_hdf5_LIBRARY_RELEASE="$PN/usr/lib/$A/hdf5/serial/libhdf5.so"
          -DOPENBLAS_INCLUDE_DIR="$PN/usr/include/$A/openblas-pthread"
          -DOPENBLAS_LIBRARY="$PN/usr/lib/$A/openblas-pthread/libopenblas.so")
    export PKG_CONFIG_PATH="$PN/usr/lib/$A/pkgconfig:$PN/usr/share/pkgconfig"
    export PKG_CONFIG_SYSROOT_DIR="$PN"
    export LIBRARY_PATH="$PN/usr/lib/$A:$PN/lib/$A${LIBRARY_PATH:+:$LIBRARY_PATH}"
  fi
  # a build directory configured by another generator cannot be reused
  if [ -f "$BUILD/CMakeCache.txt" ] && ! grep -q "CMAKE_GENERATOR:INTERNAL=${gen[1]:-Unix Makefiles}\$" "$BUILD/CMakeCache.txt"; then
    rm -rf "$BUILD"
  fi
  local t0=$SECONDS
  if ! cmake -S . -B "$BUILD" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_COMPILER="$nvcc" \
       -DCMAKE_CUDA_ARCHITECTURES="$arch" -DPT_CUDA_EMU=OFF "${deps[@]}"; then
    row "FAIL" "cmake configure (gpu-check.log)"
    return 1
  fi
  if ! grep -q '^PT_CUDA_BACKEND_BUILT:INTERNAL=ON' "$BUILD/CMakeCache.txt"; then
    row "FAIL" "configure found no usable nvcc: the cuda backend would not be built"
    return 1
  fi
  local t1=$SECONDS
  if ! cmake --build "$BUILD" --target punctum test_backend_ops_cuda test_wrappers_cuda -j "$(nproc)"; then
    row "FAIL" "build (gpu-check.log)"
    return 1
  fi
  local missing
  missing=$(pn ldd "$BUILD/punctum" "$BUILD/test_backend_ops_cuda" "$BUILD/test_wrappers_cuda" |
            grep 'not found' | sort -u || true)
  if [ -n "$missing" ]; then
    row "FAIL" "ldd: $(echo "$missing" | tr -s ' \n\t' ' ')"
    return 1
  fi
  make_wrapper
  row "ok" "sm_$arch, $("$nvcc" --version | grep -o 'release [0-9.]*'); configure $((t1 - t0)) s, build $((SECONDS - t1)) s"
}

phase_ops() {
  need_gpu ops
  local rc=0 rc2=0
  pn "$BUILD/test_backend_ops_cuda" > "$RES/ops.txt" 2>&1 || rc=$?
  local last
  last=$(tail -n 1 "$RES/ops.txt")
  echo "$last"
  { echo; echo "=== test_wrappers_cuda"; } >> "$RES/ops.txt"
  pn "$BUILD/test_wrappers_cuda" >> "$RES/ops.txt" 2>&1 || rc2=$?
  tail -n 1 "$RES/ops.txt"
  if [ "$rc" -eq 0 ] && [ "$rc2" -eq 0 ]; then row "ok" "$last; wrappers: $(tail -n 1 "$RES/ops.txt")"
  else row "FAIL" "exit $rc / $rc2 (ops / wrappers): $(grep -c 'FAIL' "$RES/ops.txt" || true) failing rows (ops.txt)"; return 1; fi
}

phase_e2e() {
  need_gpu e2e
  make_wrapper
  local rc=0
  "$PY" tests/emu/e2e.py --punctum "$BUILD/bin/punctum" --other "$BUILD/bin/punctum" --models "$E2E_MODELS" \
    --work "$BUILD/e2e" > "$RES/e2e.txt" 2>&1 || rc=$?
  local last
  last=$(tail -n 1 "$RES/e2e.txt")
  echo "$last"
  if [ "$rc" -eq 0 ]; then row "ok" "$E2E_MODELS: $last"
  else row "FAIL" "exit $rc: $(grep -c ' FAIL' "$RES/e2e.txt" || true) failing rows (e2e.txt): $last"; return 1; fi
}

phase_long() {
  need_gpu long
  make_wrapper
  local rc=0
  "$PY" tests/emu/gpu_long.py --punctum "$BUILD/bin/punctum" --work "$BUILD/long" --T 4096 \
    > "$RES/long.txt" 2>&1 || rc=$?
  local last
  last=$(tail -n 1 "$RES/long.txt")
  echo "$last"
  if [ "$rc" -eq 0 ]; then row "ok" "T=4096, V=128256: $last"
  else row "FAIL" "exit $rc: $(grep -c ' FAIL' "$RES/long.txt" || true) failing rows (long.txt): $last"; return 1; fi
}

find_sanitizer() {
  local c
  for c in "$(command -v compute-sanitizer || true)" /usr/local/cuda/bin/compute-sanitizer \
           /usr/local/cuda/compute-sanitizer/compute-sanitizer; do
    [ -n "$c" ] && [ -x "$c" ] && { echo "$c"; return 0; }
  done
  return 1
}

phase_sanitize() {
  need_gpu sanitize
  local cs
  if ! cs=$(find_sanitizer); then
    row "not run" "compute-sanitizer not found"
    return 0
  fi
  # punctum's kernels, by name (everything else, cuBLAS in particular, runs uninstrumented)
  local names filter
  names=$(cat kernels/*.cuh tests/emu/test_wrappers.cu | tr '\n' ' ' |
          grep -oE '__global__ void( __launch_bounds__\([^)]*\))?[[:space:]]+k_[a-z0-9_]+' |
          grep -oE 'k_[a-z0-9_]+$' | sort -u | paste -sd'|')
  filter=(--kernel-name "regex=($names)")
  local out="$RES/sanitizer.txt"
  : > "$out"
  local pairs="$BUILD/sanitize.jsonl"
  printf '%s\n' \
    '{"id":"p","a_ids":[5,17,9,33,41,8,70,12,3],"b_ids":[5,17,9,33,41,8,70,12,3,44],"target_id":7}' \
    '{"id":"q","a_ids":[11,12,13,14,15,16,17,18],"b_ids":[11,12,13,14,15,16,17,19]}' \
    '{"id":"r","a_ids":[60,61,62,63,64,65,66,67,68,69,70,71,72,73,74,75,76,77,78,79,80,81,82,83,84,85,86,87,88,89,90,91,92,93,94,40,41,42,43,44,45]}' \
    > "$pairs"
  local model="$BUILD/e2e/models/llama_gqa"
  [ -d "$model" ] || "$PY" tests/emu/make_models.py "$BUILD/e2e/models" llama_gqa > /dev/null
  local clean=0 failed=0 refused=0 tool what rc
  for tool in memcheck racecheck; do
    for what in ops wrappers sweep-bf16 sweep-f32; do
      local cmd=("$BUILD/test_backend_ops_cuda" --quick)
      [ "$what" = wrappers ] && cmd=("$BUILD/test_wrappers_cuda")
      if [ "${what#sweep}" != "$what" ]; then
        # shellcheck disable=SC2054  # (commas inside one argument)
        cmd=("$BUILD/punctum" run --model "$model" --pairs "$pairs" --out "$BUILD/sanitize.h5" --force
             --backend cuda --dtype "${what#sweep-}" --ablate knockout --positions all --patch resid
             --stats mass,last,resid,topk,lens,patterns --progress never)
      fi
      local extra=()
      [ "$tool" = memcheck ] && extra=(--leak-check full)
      rc=0
      echo "=== $tool $what" >> "$out"
      pn "$cs" --tool "$tool" "${extra[@]}" "${filter[@]}" --error-exitcode 99 --print-limit 20 "${cmd[@]}" \
        > "$BUILD/sanitize.last" 2>&1 || rc=$?
      if [ "$rc" -ne 0 ] && [ "$rc" -ne 99 ] && grep -qiE 'unrecognized|invalid (option|value|filter)|kernel-name' "$BUILD/sanitize.last"; then
        echo "(the kernel filter was refused; checking every kernel)" >> "$out"
        filter=()
        rc=0
        pn "$cs" --tool "$tool" "${extra[@]}" --error-exitcode 99 --print-limit 20 "${cmd[@]}" \
          > "$BUILD/sanitize.last" 2>&1 || rc=$?
      fi
      tail -n 40 "$BUILD/sanitize.last" >> "$out"
      if grep -qiE 'device not supported|not supported on this (device|platform)|unable to (attach|initialize)' "$BUILD/sanitize.last"; then
        refused=$((refused + 1))
        note "compute-sanitizer $tool $what: refused by this machine"
      elif [ "$rc" -eq 0 ]; then
        clean=$((clean + 1))
        note "compute-sanitizer $tool $what: clean"
      else
        failed=$((failed + 1))
        note "compute-sanitizer $tool $what: exit $rc ($(grep -m1 'ERROR SUMMARY' "$BUILD/sanitize.last" || tail -n 1 "$BUILD/sanitize.last"))"
      fi
      row "partial" "after $tool $what: $clean clean, $failed with errors, $refused refused"
    done
  done
  if [ "$refused" -gt 0 ] && [ "$clean" -eq 0 ] && [ "$failed" -eq 0 ]; then
    row "not run" "the machine refuses compute-sanitizer (sanitizer.txt)"
  elif [ "$failed" -gt 0 ]; then
    row "FAIL" "$failed of 8 runs report errors (sanitizer.txt)"
    return 1
  else
    local also=""
    [ "$refused" -eq 0 ] || also=", $refused refused"
    row "ok" "memcheck + racecheck, own kernels, op test + wrappers + 2 sweeps: $clean clean$also"
  fi
}

phase_bench() {
  need_gpu bench
  make_wrapper
  local rc=0 left=${PHASE_SECONDS:-300}
  "$PY" benchmarks/bench_cuda.py --punctum "$BUILD/bin/punctum" --out "$RES" --work "$BUILD/bench" \
    --T "$BENCH_T" --deadline $((left - 10)) || rc=$?
  if [ "$rc" -eq 0 ] && [ -f "$RES/bench_cuda.md" ]; then
    row "ok" "bench_cuda.md / bench_cuda.json ($(grep -c '^| [0-9]' "$RES/bench_cuda.md" || true) rows)"
  else
    row "FAIL" "bench_cuda.py exit $rc"
    return 1
  fi
}

if [ "${1:-}" = __phase ]; then
  export PHASE=$2
  "phase_$2"
  exit $?
fi

# ---- the call ----------------------------------------------------------------------------------

PHASES=("$@")
[ ${#PHASES[@]} -gt 0 ] || PHASES=("${ALL_PHASES[@]}")
for p in "${PHASES[@]}"; do
  case " ${ALL_PHASES[*]} " in *" $p "*) ;; *) echo "gpu-check: unknown phase '$p' (${ALL_PHASES[*]})" >&2; exit 2 ;; esac
done

START=$SECONDS
BUDGET=${GPU_CHECK_BUDGET:-530}
GPU_NAME="no GPU"
has_gpu && GPU_NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n 1)
SLUG=$(printf '%s' "$GPU_NAME" | tr -cs 'A-Za-z0-9' '-' | sed 's/^-*//; s/-*$//')
RES=${OUT:-$ROOT/benchmarks/results/$(date -u +%Y%m%d)-$SLUG}
mkdir -p "$RES" "$BUILD"
RES=$(cd "$RES" && pwd)
export RES
LOG=$RES/gpu-check.log
SUMMARY=$RES/summary.md
exec > >(tee -a "$LOG") 2>&1
TEE_PID=$!
rm -f "$BUILD"/phase.*.row

# a phase's own limit (seconds) and the least time worth starting it with
declare -A CAP=([deps]=60 [build]=240 [ops]=90 [e2e]=150 [long]=120 [sanitize]=150 [bench]=330)
declare -A MIN=([deps]=5 [build]=60 [ops]=15 [e2e]=30 [long]=30 [sanitize]=30 [bench]=60)
STATUS=0
declare -A SECS
for p in "${PHASES[@]}"; do
  var="GPU_CHECK_${p^^}_S"
  cap=${!var:-${CAP[$p]}}
  left=$((BUDGET - (SECONDS - START) - 5))
  [ "$cap" -le "$left" ] || cap=$left
  if [ "$left" -lt "${MIN[$p]}" ]; then
    printf '%s\t%s\n' "not run" "no time left in the ${BUDGET} s budget" > "$BUILD/phase.$p.row"
    SECS[$p]=0
    STATUS=1
    continue
  fi
  note "== $p (limit ${cap} s, $((BUDGET - (SECONDS - START))) s left)"
  t0=$SECONDS
  rc=0
  PHASE_SECONDS=$cap timeout -k 10 "$cap" "$SELF" __phase "$p" || rc=$?
  SECS[$p]=$((SECONDS - t0))
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    so_far=""
    [ -f "$BUILD/phase.$p.row" ] && so_far="; so far: $(cut -f2 "$BUILD/phase.$p.row")"
    printf '%s\t%s\n' "TIMEOUT" "stopped after its ${cap} s limit$so_far" > "$BUILD/phase.$p.row"
  elif [ "$rc" -eq 3 ]; then
    printf '%s\t%s\n' "FAIL" "no GPU here (nvidia-smi finds none)" > "$BUILD/phase.$p.row"
  elif [ ! -f "$BUILD/phase.$p.row" ]; then
    printf '%s\t%s\n' "FAIL" "exit $rc before reporting (gpu-check.log)" > "$BUILD/phase.$p.row"
  fi
  st=$(cut -f1 "$BUILD/phase.$p.row")
  case "$st" in ok|skipped|"not run") ;; *) STATUS=1 ;; esac
  # a failed build leaves nothing to test
  if [ "$p" = build ] && [ "$st" != ok ]; then
    for q in "${PHASES[@]}"; do
      case "$q" in deps|build) ;; *) printf '%s\t%s\n' "not run" "the build failed" > "$BUILD/phase.$q.row" ;; esac
    done
    break
  fi
done

# (the device machine's copy of the tree may have no .git: pass GPU_CHECK_COMMIT=$(git rev-parse HEAD))
COMMIT=${GPU_CHECK_COMMIT:-$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)}
DIRTY=""
[ -n "${GPU_CHECK_COMMIT:-}" ] || DIRTY=$(git status --porcelain --untracked-files=no 2>/dev/null | head -n 1)
{
  echo "# gpu-check $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo
  echo "- device: $GPU_NAME$(has_gpu && echo ", driver $(nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -n 1)")"
  echo "- nvcc: $( (command -v nvcc >/dev/null && nvcc --version || /usr/local/cuda/bin/nvcc --version) 2>/dev/null | grep -o 'release [0-9.]*' || echo 'not found')"
  echo "- commit: $COMMIT${DIRTY:+ (with uncommitted changes)}"
  echo "- total: $((SECONDS - START)) s of the ${BUDGET} s budget"
  echo
  echo "| phase | result | seconds | detail |"
  echo "|---|---|---|---|"
  for p in "${ALL_PHASES[@]}"; do
    [ -f "$BUILD/phase.$p.row" ] || continue
    IFS=$'\t' read -r st detail < "$BUILD/phase.$p.row"
    echo "| $p | $st | ${SECS[$p]:--} | ${detail//|/\\|} |"
  done
  if [ -f "$RES/bench_cuda.md" ]; then
    echo
    cat "$RES/bench_cuda.md"
  fi
} > "$SUMMARY"
echo
cat "$SUMMARY"
exec 1>&- 2>&-
wait "$TEE_PID" 2>/dev/null || true # the log is complete before the results are collected
exit $STATUS
