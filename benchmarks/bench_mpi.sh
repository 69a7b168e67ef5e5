#!/usr/bin/env bash
# Scaling of `mpirun -np N punctum run` (SPEC §4, §8) on this machine's cores, cpu backend.
#
#   benchmarks/bench_mpi.sh                   # 1 -> 2 ranks (and -> all cores when more than 2)
#   BENCH_RECORDS=512 BENCH_T=256 benchmarks/bench_mpi.sh
#
# Model: a SmolLM2-135M-shaped Llama with BENCH_LAYERS layers (benchmarks/make_model.py), input:
# BENCH_RECORDS pairs of BENCH_T random token ids (b = a + one token: prefix sharing). Runs, each
# timed end to end (process start, model load, sweep, commits, the final copy / the view):
#   plain, 1 thread      plain, all cores      mpirun -np N (cores split evenly among ranks)
# The job's OUT.h5 is checked to hold every pair. Ratios matter on shared machines: compare the
# rows of one table only. Prints a Markdown table and writes it to benchmarks/out/bench_mpi.md.
#
# Environment: PUNCTUM_BIN (default build/punctum; must be built with MPI: `punctum --version`
# says MPI), PYTHON (with torch + transformers, for the model), BENCH_RECORDS (256), BENCH_T (128),
# BENCH_LAYERS (4), BENCH_DIR (benchmarks/out/mpi), BENCH_REPEAT (2: best of).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${PUNCTUM_BIN:-$ROOT/build/punctum}
PY=${PYTHON:-python3}
RECORDS=${BENCH_RECORDS:-256}
T=${BENCH_T:-128}
LAYERS=${BENCH_LAYERS:-4}
WORK=${BENCH_DIR:-$ROOT/benchmarks/out/mpi}
REPEAT=${BENCH_REPEAT:-2}
CORES=$(nproc)

[ -x "$BIN" ] || { echo "bench_mpi: $BIN not found (build it, or set PUNCTUM_BIN)" >&2; exit 2; }
"$BIN" --version | grep -q MPI || { echo "bench_mpi: $BIN was built without MPI (include cmake/mpi.cmake)" >&2; exit 2; }
command -v mpirun >/dev/null || { echo "bench_mpi: mpirun not found (openmpi-bin)" >&2; exit 2; }

mkdir -p "$WORK"
MODEL="$WORK/model"
"$PY" "$ROOT/benchmarks/make_model.py" "$MODEL" --layers "$LAYERS" >/dev/null
PAIRS="$WORK/pairs-$RECORDS-$T.jsonl"
"$PY" - "$PAIRS" "$RECORDS" "$T" <<'EOF'
import json, random, sys
path, n, T = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
r = random.Random(0)
with open(path, "w") as f:
    for i in range(n):
        a = [r.randrange(49152) for _ in range(T)]
        f.write(json.dumps({"id": f"b{i}", "a_ids": a, "b_ids": a + [13]}) + "\n")
EOF

MPIRUN=(mpirun --bind-to none --oversubscribe)
[ "$(id -u)" = 0 ] && MPIRUN+=(--allow-run-as-root)
COMMON=(--model "$MODEL" --pairs "$PAIRS" --backend cpu --batch-tokens 2048 --progress never --force)

now() { date +%s.%N; }
# best wall time of REPEAT runs of "$@"
best() {
  local b="" t0 t1 d
  for _ in $(seq "$REPEAT"); do
    t0=$(now)
    "$@" >"$WORK/last.log" 2>&1 || { cat "$WORK/last.log" >&2; exit 1; }
    t1=$(now)
    d=$(echo "$t1 - $t0" | bc -l)
    if [ -z "$b" ] || [ "$(echo "$d < $b" | bc -l)" = 1 ]; then b=$d; fi
  done
  echo "$b"
}

pairs_in() {
  "$PY" -c "import h5py,sys; print(int(h5py.File(sys.argv[1],'r').attrs['committed_pairs']))" "$1"
}

declare -a ROWS
add_row() { # name seconds
  local pps
  pps=$(echo "$RECORDS / $2" | bc -l)
  ROWS+=("$(printf '| %-34s | %8.2f | %9.1f |' "$1" "$2" "$pps")")
}

t1=$(best env OMP_NUM_THREADS=1 "$BIN" run "${COMMON[@]}" --threads 1 --out "$WORK/plain1.h5")
add_row "plain, 1 thread" "$t1"
[ "$(pairs_in "$WORK/plain1.h5")" = "$RECORDS" ]
tc=$(best env OMP_NUM_THREADS="$CORES" "$BIN" run "${COMMON[@]}" --threads "$CORES" --out "$WORK/plainN.h5")
add_row "plain, $CORES threads" "$tc"
# the writer's share of a plain run (its own report)
env OMP_NUM_THREADS=1 "$BIN" run "${COMMON[@]}" --threads 1 --out "$WORK/plain1.h5" --progress always 2>"$WORK/plain1.log" || true
WRITER=$(grep -o 'in [0-9.]* s (writer busy [0-9.]* s, final copy [0-9.]* s)' "$WORK/plain1.log" | tail -1 || true)

declare -a NPS=(2)
[ "$CORES" -gt 2 ] && NPS+=("$CORES")
for np in "${NPS[@]}"; do
  t=$(best env OMP_NUM_THREADS=$((CORES / np > 0 ? CORES / np : 1)) "${MPIRUN[@]}" -np "$np" "$BIN" run "${COMMON[@]}" \
        --out "$WORK/job$np.h5")
  [ "$(pairs_in "$WORK/job$np.h5")" = "$RECORDS" ] || { echo "bench_mpi: job$np.h5 is incomplete" >&2; exit 1; }
  add_row "mpirun -np $np ($((CORES / np > 0 ? CORES / np : 1)) thread(s) per rank)" "$t"
  SPEED+=("-np $np: $(printf '%.2f' "$(echo "$t1 / $t" | bc -l)")x vs 1 thread, $(printf '%.2f' "$(echo "$tc / $t" | bc -l)")x vs $CORES threads")
done

OUT="$ROOT/benchmarks/out/bench_mpi.md"
{
  echo "### bench_mpi.sh — $(date -u +%Y-%m-%dT%H:%MZ), commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
  echo
  echo "Machine: $CORES cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')), load average $(cut -d' ' -f1-3 /proc/loadavg)."
  echo "Model: SmolLM2-135M shape, $LAYERS layers; $RECORDS pairs of $T tokens (+1 for b); cpu backend; best of $REPEAT."
  echo "Command: BENCH_RECORDS=$RECORDS BENCH_T=$T BENCH_LAYERS=$LAYERS benchmarks/bench_mpi.sh"
  echo
  echo "| run                                | wall (s) |   pairs/s |"
  echo "|------------------------------------|---------:|----------:|"
  printf '%s\n' "${ROWS[@]}"
  echo
  for s in "${SPEED[@]}"; do echo "- speedup $s"; done
  [ -n "$WRITER" ] && echo "- plain, 1 thread: $WRITER (the writer thread overlaps the compute)"
} | tee "$OUT"
