#pragma once
// The CPU executor: lshattn::decode(lshattn::cpu(threads), est, params, batch)
// with SIMD kernels chosen at run time (AVX-512, AVX2+FMA or SSE2) and a
// thread pool, plus cpu_index, the compact LSH index it runs fastest on.
// Link lshattn::cpu (cmake/parts/cpu.cmake). docs/cpu-index-layout.md
// describes the index; docs/performance.md the measurements.

#include "lshattn/decode.hpp"
#include "lshattn/executor/cpu/executor.hpp"
#include "lshattn/executor/cpu/index.hpp"
#include "lshattn/executor/cpu/isa.hpp"
#include "lshattn/executor/cpu/policy.hpp"
