#!/usr/bin/env bash
# What the GPU work needs, in two device calls of under 10 minutes each
# (device time is scarce, so each call does all of its part):
#   bash bench/cuda/device_run.sh check   the GPU tests, then the tests under
#                                         compute-sanitizer memcheck and racecheck
#   bash bench/cuda/device_run.sh bench   per-kernel times (ncu), the benchmark
#                                         (all contexts), the PyTorch baseline
# With no argument it does both (over 10 minutes: only for a machine without
# the per-call limit). Binaries are built elsewhere and carried in .carry/cuda
# (with libbenchmark and libcudart in .carry/cuda/lib). Logs go to $OUT (or
# /tmp/lshattn-out). To prepare the carried folder:
#   cmake -S . -B build-cuda -DLSHATTN_ENABLE_CUDA=ON -DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc -DCMAKE_BUILD_TYPE=Release
#   cmake --build build-cuda --target lshattn_test_cuda cuda_decode_bench -j2
#   mkdir -p .carry/cuda/lib && cp build-cuda/tests/lshattn_test_cuda build-cuda/bench/cuda_decode_bench .carry/cuda/
#   cp -L /lib/x86_64-linux-gnu/libbenchmark.so.1debian /usr/local/cuda/lib64/libcudart.so.13 .carry/cuda/lib/
set -u
C=.carry/cuda
O=${OUT:-/tmp/lshattn-out}
mode=${1:-all}
mkdir -p "$O"
export LD_LIBRARY_PATH=$PWD/$C/lib:${LD_LIBRARY_PATH:-}
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm,clocks.mem,driver_version --format=csv >"$O/gpu.txt" 2>&1
cat "$O/gpu.txt"
if [ "$mode" != bench ]; then
  timeout 90 "$C/lshattn_test_cuda" >"$O/tests.log" 2>&1
  echo "tests rc=$?" | tee -a "$O/tests.log"
  timeout 200 compute-sanitizer --tool memcheck --error-exitcode 9 "$C/lshattn_test_cuda" >"$O/memcheck.log" 2>&1
  echo "memcheck rc=$?" | tee -a "$O/memcheck.log"
  timeout 250 compute-sanitizer --tool racecheck --error-exitcode 9 "$C/lshattn_test_cuda" -tce="*graph*" >"$O/racecheck.log" 2>&1
  echo "racecheck rc=$?" | tee -a "$O/racecheck.log"
  tail -n 25 "$O/tests.log"; tail -n 4 "$O/memcheck.log" "$O/racecheck.log"
fi
if [ "$mode" != check ]; then
  # Per-kernel times of the LSH step at 128K/b8 (ncu flushes caches between kernels).
  timeout 90 ncu --clock-control none --metrics gpu__time_duration.sum --launch-count 25 --print-summary per-kernel \
    -k "regex:^(query_hash|inclusion_table|select|attend|attend_mma|merge)_kernel$" "$C/cuda_decode_bench" 131072 \
    --benchmark_filter=^lsh_step/128K/b8 >"$O/ncu.log" 2>&1
  timeout 400 "$C/cuda_decode_bench" >"$O/bench.log" 2>&1
  echo "bench rc=$?" | tee -a "$O/bench.log"
  timeout 60 python3 bench/cuda/torch_sdpa.py >"$O/torch.log" 2>&1
  echo "torch rc=$?" | tee -a "$O/torch.log"
  grep -E "^  void|gpu__time" "$O/ncu.log"; grep -A20 "^summary" "$O/bench.log"; grep -E "build|copy" "$O/bench.log" | tail -3
  cat "$O/torch.log"
fi
