#!/usr/bin/env bash
# Builds and runs the lshattn_bench_* programs, writing into OUT_DIR:
#   <program>.json  Google Benchmark's --benchmark_out (all repetitions and aggregates)
#   results.md      one Markdown table of the median aggregates (bench/json_to_markdown.py)
#   machine.txt     CPU, compiler, commit, load and the command line
# Usage: bench/run.sh OUT_DIR [google-benchmark args...]
#   BUILD=dir        build directory (default build/bench)
#   PROGRAMS="a b"   programs to run, without the lshattn_bench_ prefix (default: every bench/*.cpp)
#   Default args: --benchmark_repetitions=5 --benchmark_min_time=0.1 (medians are reported);
#   any args given replace those, e.g. --benchmark_filter='^decode/'.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
[ $# -ge 1 ] || { sed -n '2,11p' "$0"; exit 2; }
out=$(mkdir -p "$1" && cd "$1" && pwd)
shift
args=("$@")
[ ${#args[@]} -gt 0 ] || args=(--benchmark_repetitions=5 --benchmark_min_time=0.1)
build=${BUILD:-$root/build/bench}
if [ -z "${PROGRAMS:-}" ]; then
  PROGRAMS=$(cd "$root/bench" && ls lshattn_bench_*.cpp | sed 's/^lshattn_bench_//; s/\.cpp$//' | tr '\n' ' ')
fi
targets=()
for p in $PROGRAMS; do targets+=(--target "lshattn_bench_$p"); done

if [ -f "$build/CMakeCache.txt" ]; then
  cmake -S "$root" -B "$build" -DLSHATTN_BUILD_BENCH=ON >/dev/null  # keep that build's own settings
else
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DLSHATTN_BUILD_BENCH=ON -DLSHATTN_BUILD_TESTS=OFF \
    -DLSHATTN_BUILD_EXAMPLES=OFF >/dev/null
fi
cmake --build "$build" -j "$(nproc 2>/dev/null || echo 2)" "${targets[@]}" >/dev/null

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit: $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "cpu: $(lscpu 2>/dev/null | sed -n 's/^Model name: *//p'), $(nproc) cores"
  echo "compiler: $(${CXX:-c++} --version | head -1)"
  echo "flags: $(grep -h CXX_FLAGS "$build"/bench/CMakeFiles/lshattn_bench_*.dir/flags.make 2>/dev/null | sort -u | sed 's/^CXX_FLAGS = //' | head -1)"
  echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "command: bench/run.sh $out ${args[*]} (PROGRAMS=\"$PROGRAMS\")"
} >"$out/machine.txt"

jsons=()
for p in $PROGRAMS; do
  exe="$build/bench/lshattn_bench_$p"
  echo "== lshattn_bench_$p" >&2
  "$exe" "${args[@]}" --benchmark_out="$out/lshattn_bench_$p.json" --benchmark_out_format=json
  jsons+=("$out/lshattn_bench_$p.json")
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$out/machine.txt"
python3 "$root/bench/json_to_markdown.py" "${jsons[@]}" >"$out/results.md"
echo "wrote $out/results.md" >&2
