#!/usr/bin/env bash
# Run every CPU benchmark in one go on this machine and write benchmarks/RESULTS.md (machine,
# date, commit and command with each table). Benchmarks are not tests: they take minutes and
# want a quiet machine.
#
#   benchmarks/run.sh            # all
#   QUICK=1 benchmarks/run.sh    # fewer repetitions
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${PUNCTUM_VENV:-$HOME/.cache/punctum/venv}"
PY="$VENV/bin/python"
export PUNCTUM_BIN="${PUNCTUM_BIN:-$PWD/build/punctum}"
OUT=benchmarks/RESULTS.md
REPS=2; [ "${QUICK:-0}" = 1 ] && REPS=1
commit=$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src include kernels || echo "+dirty")
{
  echo "# punctum benchmarks"
  echo
  echo "- machine: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB"
  echo "- date: $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "- commit: $commit"
  echo "- command: benchmarks/run.sh (each section names its own command)"
  echo "- load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo
  echo "Ratios are measured within one run on the same machine; on these shared 2-core CPU"
  echo "machines absolute times say little. GPU figures live under benchmarks/results/."
  echo
  echo "## CPU engine vs Hugging Face transformers (SPEC §8)"
  echo
  echo '```'; echo "$PY benchmarks/bench_cpu.py --repeat $REPS"; echo '```'
  "$PY" benchmarks/bench_cpu.py --repeat "$REPS"
  echo
  echo "## BF16 checkpoints: peak memory and speed against F32 (SPEC §8)"
  echo
  echo '```'; echo "$PY benchmarks/bench_bf16.py --repeat $REPS"; echo '```'
  "$PY" benchmarks/bench_bf16.py --repeat "$REPS"
  echo
  echo "## Causal experiments: knockout and prefix sharing (SPEC §8)"
  echo
  echo '```'; echo "$PY benchmarks/bench_experiments.py --reps $REPS"; echo '```'
  "$PY" benchmarks/bench_experiments.py --reps "$REPS"
  echo
  echo "## HDF5 writer (SPEC §8)"
  echo
  echo "Synthetic statistics stream (the layout of --stats mass,last,resid,topk, a Llama-3.2-1B"
  echo "shape: 16 layers x 32 heads), as fast as the writer takes it, 1..N writer threads, output"
  echo "on tmpfs (the writer, not the disk); 'MB per writer CPU-second' is the rate per core."
  echo
  echo '```'; echo "build/bench_writer --threads 1,2,$(nproc) --tokens 400000 --dir /dev/shm --markdown"; echo '```'
  build/bench_writer --threads "1,2,$(nproc)" --tokens 400000 --dir /dev/shm --markdown
  echo
  echo "Statistics-bound sweep (before: PUNCTUM_BASE_BIN, an older build, when set):"
  echo
  echo '```'; echo "$PY benchmarks/bench_sweep_writer.py --reps $REPS"; echo '```'
  "$PY" benchmarks/bench_sweep_writer.py --reps "$REPS"
  echo
  echo "Chunk shape of the per-token statistics, written and read back by the punctum reader:"
  echo
  echo '```'; echo "$PY benchmarks/bench_chunks.py --reps $((REPS + 1))"; echo '```'
  "$PY" benchmarks/bench_chunks.py --reps "$((REPS + 1))"
  echo
  echo "## Generation: greedy decode vs transformers generate(), knockout with generation (SPEC §8)"
  echo
  echo '```'; echo "$PY benchmarks/bench_generate.py --reps $REPS"; echo '```'
  "$PY" benchmarks/bench_generate.py --reps "$REPS"
  echo
  echo "### The few-row linear kernels (decode steps) against sgemm"
  echo
  echo '```'; echo "build/bench_linear --threads 2 --rows 1,4,8,12,16,32 --markdown"; echo '```'
  build/bench_linear --threads 2 --rows 1,4,8,12,16,32 --markdown
  echo
  if [ -f build/compile_commands.json ] && command -v nvcc >/dev/null 2>&1; then
    echo "## CUDA kernels: registers, shared memory, spills (issue 17)"
    echo
    echo '```'; echo "benchmarks/kernel_resources.py"; echo '```'
    "$PY" benchmarks/kernel_resources.py
    echo
  fi
  echo "## Tokenizer throughput vs tokenizers (one thread)"
  echo
  echo '```'; echo "$PY benchmarks/bench_tokenizer.py"; echo '```'
  "$PY" benchmarks/bench_tokenizer.py
  echo
  echo "## Roofline model of the cuda backend (emulation-counted, predicted H100)"
  echo
  echo "The CUDA backend run by the emulation (build/punctum-emu) with PUNCTUM_EMU_ROOFLINE: per"
  echo "kernel, bytes (distinct 32-byte sectors per launch) and FLOPs (mma.sync, cuBLASLt) counted as"
  echo "it runs, on a Llama-3.2-1B-shaped bf16 model (1 and 2 layers, scaled exactly to 16), then"
  echo "predicted H100 SXM time = max(bytes / 3.35 TB/s, FLOPs / 989 TFLOP/s) per kernel, and MFU."
  echo "No GPU involved: a model of the design, to check against benchmarks/results/ when one is lent."
  echo
  if [ -x build/punctum-emu ]; then
    echo '```'; echo "$PY benchmarks/roofline.py --emu build/punctum-emu"; echo '```'
    "$PY" benchmarks/roofline.py --emu build/punctum-emu
  else
    echo "(not run: build/punctum-emu was not built, no CUDA headers)"
  fi
} > "$OUT.tmp"
mv "$OUT.tmp" "$OUT"
echo "wrote $OUT"
