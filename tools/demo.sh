#!/usr/bin/env bash
# Builds and runs the demo on its embedded default workload (README's first command).
# Usage: tools/demo.sh [demo options, see --help]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bash "$root/tools/setup-deps.sh"
build=$root/build/demo
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DLSHATTN_BUILD_TESTS=OFF -DLSHATTN_BUILD_BENCH=OFF >/dev/null
cmake --build "$build" -j "$(nproc 2>/dev/null || echo 2)" --target lshattn_demo >/dev/null
"$build/examples/lshattn_demo" "$@"
