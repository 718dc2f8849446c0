#!/usr/bin/env bash
# Builds and runs the whole test suite (README's second command).
# Usage: tools/test.sh [build-dir] [extra cmake args...]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bash "$root/tools/setup-deps.sh"
build=${1:-$root/build/release}
shift || true
jobs=$(nproc 2>/dev/null || echo 2)
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DLSHATTN_BUILD_TESTS=ON -DLSHATTN_BUILD_BENCH=OFF "$@"
cmake --build "$build" -j "$jobs"
ctest --test-dir "$build" --output-on-failure -j "$jobs"
