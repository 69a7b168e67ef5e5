#!/usr/bin/env bash
# ThreadSanitizer on the writer's thread pool: builds the unit tests with -fsanitize=thread
# (build-tsan/) and runs the writer's test (chunk encoding on 1-4 threads, commits, compaction,
# resume, the final file). HDF5 and libdeflate are not instrumented; the writer only calls HDF5
# from its own thread, and each pool thread has its own compressor.
#
#   scripts/tsan.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build-tsan}
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPT_TSAN=ON -DPT_CUDA=OFF >/dev/null
cmake --build "$BUILD" -j"$(nproc)" --target test_writer >/dev/null
export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:${TSAN_OPTIONS:-}"
"$BUILD/test_writer"
echo "tsan ok: test_writer"
