#!/usr/bin/env bash
# One-shot setup on a fresh Debian machine: system packages, the Python virtual
# environment the tests and benchmarks use, and the build. Safe to re-run: every
# step is skipped when already done.
#
#   scripts/setup.sh            # packages + venv + build
#   PUNCTUM_VENV=/path ...      # where the venv lives (default ~/.cache/punctum/venv)
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${PUNCTUM_VENV:-$HOME/.cache/punctum/venv}"
DEBS=(build-essential cmake pkg-config libhdf5-dev libopenblas-openmp-dev libjansson-dev
      libutf8proc-dev libpcre2-dev libdeflate-dev hdf5-tools libopenmpi-dev openmpi-bin python3-venv
      clang libclang-rt-14-dev valgrind chromium
      dpkg-dev file man-db)   # the .deb (cpack: dpkg-shlibdeps, file) and its man page check

missing=()
for p in "${DEBS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}" >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY_DEPS=(numpy h5py torch transformers tokenizers safetensors pytest gguf pandas xarray matplotlib)
if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating virtual environment $VENV" >&2
  mkdir -p "$(dirname "$VENV")"
  python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c "import numpy, h5py, torch, transformers, tokenizers, safetensors, pytest, gguf, pandas, xarray, matplotlib" 2>/dev/null; then
  echo "setup: installing Python packages into $VENV (torch is large; first run takes minutes)" >&2
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q "${PY_DEPS[@]}"
fi

# the analysis package (python/), editable so the checkout is what runs
if ! "$VENV/bin/python" -c "import punctum.report" 2>/dev/null; then
  "$VENV/bin/pip" install -q --no-deps -e python/
fi

echo "setup: building" >&2
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
echo "setup: done (venv: $VENV, binary: build/punctum)" >&2
