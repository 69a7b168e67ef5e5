#!/usr/bin/env bash
# Memory errors and leaks under valgrind: every C unit test, then punctum itself on a tiny
# random model (every statistic and experiment, text records, merge, inspect). Slow: a few
# minutes. Run after scripts/setup.sh. The sweeps use --backend cpu: probing for a GPU loads
# the CUDA driver, whose dynamic loading valgrind reports as invalid reads inside ld.so.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${PUNCTUM_VENV:-$HOME/.cache/punctum/venv}"
BUILD=${BUILD:-build}
VG=(valgrind -q --error-exitcode=9 --leak-check=full --errors-for-leak-kinds=definite
    --suppressions=tests/valgrind.supp)
export OMP_NUM_THREADS=1
export PUNCTUM_PCRE2_JIT=0 # valgrind cannot follow PCRE2's JIT-compiled code
fail=0
for t in "$BUILD"/test_*; do
  [ -x "$t" ] || continue
  # the real-GPU op test loads the CUDA driver, whose loader trips valgrind's ld.so checks
  case "$t" in *_cuda) continue ;; esac
  # the emulated op table: every op on its quick cases, each attention case on the two backend
  # variants that have run least (every case and variant still runs; the whole table takes half
  # an hour under valgrind, and runs natively and under ASan in the suite)
  args=()
  case "$t" in *test_backend_ops_emu) args=(--quick --sample) ;; esac
  if "${VG[@]}" "$t" "${args[@]}" >/dev/null; then echo "valgrind ok: $t"; else echo "valgrind FAILED: $t"; fail=1; fi
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$VENV/bin/python" - "$work" <<'PY'
import sys
sys.path.insert(0, "tests/python")
import tiny_models
tiny_models.build("gpt2", sys.argv[1])
tiny_models.build("llama_bf16", sys.argv[1])
PY
model=$(dirname "$(find "$work" -path '*gpt2*' -name config.json | head -1)")
bf16=$(dirname "$(find "$work" -path '*llama_bf16*' -name config.json | head -1)")
cat > "$work/pairs.jsonl" <<'JSONL'
{"id": "t1", "a": "The cat sat.", "b": "The cat sat", "target": " on"}
{"id": "t2", "a": "Is it raining?\nYes", "b": "Is it raining\nYes"}
{"id": "i1", "a_ids": [5, 17, 42, 99, 3], "b_ids": [5, 17, 42, 99, 3, 7], "target_id": 11}
{"id": "i2", "a_ids": [1, 2, 3, 4, 5, 6], "b_ids": [1, 2, 9, 4, 5, 6]}
not json
JSONL
run() { if "${VG[@]}" "$@" >/dev/null 2>"$work/err"; then echo "valgrind ok: ${*:1:2}"; else cat "$work/err"; echo "valgrind FAILED: $*"; fail=1; fi; }
run "$BUILD/punctum" run --model "$model" --pairs "$work/pairs.jsonl" --out "$work/a.h5" --force \
  --stats mass,last,resid,topk,lens,massive,patterns --ablate knockout --positions all --windows 0:1,1:2 \
  --patch resid --batch-tokens 16 --progress never --backend cpu
run "$BUILD/punctum" run --model "$model" --pairs "$work/pairs.jsonl" --out "$work/s0.h5" --shard 0/2 --progress never --backend cpu
run "$BUILD/punctum" run --model "$model" --pairs "$work/pairs.jsonl" --out "$work/s1.h5" --shard 1/2 --progress never --backend cpu
# BF16 weights (converted block by block), and out of memory (PUNCTUM_TEST_ALLOC_LIMIT): the
# batch halved and retried, every rolled-back row freed
run "$BUILD/punctum" run --model "$bf16" --pairs "$work/pairs.jsonl" --out "$work/bf.h5" --force \
  --ablate knockout --positions all --progress never --backend cpu
PUNCTUM_TEST_ALLOC_LIMIT=40000 run "$BUILD/punctum" run --model "$model" --pairs "$work/pairs.jsonl" \
  --out "$work/oom.h5" --force --stats mass,last,resid,topk,lens,massive --ablate knockout --patch resid \
  --batch-tokens 4096 --progress never --backend cpu
run "$BUILD/punctum" merge --out "$work/m.h5" "$work/s0.h5" "$work/s1.h5"
run "$BUILD/punctum" inspect "$work/a.h5"
run "$BUILD/punctum" tokenize --model "$model" --json "Hello, world."
exit $fail
