#pragma once
// lshattn with the CUDA executor. Include from .cu files compiled by nvcc;
// <lshattn/lshattn.hpp> stays free of CUDA.
//
//   lshattn::cuda_lsh_index index(head_dim, kv_heads, lsh_params{}, capacity);
//   index.build(device_keys, sink, tokens - window, stream);      // plan
//   lshattn::cuda_workspace ws(lshattn::cuda.workspace_bytes(est, params, batch));
//   index.sync(device_keys, params, stream);                      // each step
//   lshattn::decode(lshattn::cuda.on(stream).with(ws), lshattn::estimator::lsh{}, params, batch);

#if !defined(__CUDACC__)
#error "<lshattn/cuda.cuh> must be compiled by nvcc; use <lshattn/lshattn.hpp> for host-only code"
#endif

#include "lshattn/lshattn.hpp"
#include "lshattn/executor/cuda/common.cuh"
#include "lshattn/executor/cuda/hash.cuh"
#include "lshattn/executor/cuda/index.cuh"
#include "lshattn/executor/cuda/kernels.cuh"
#include "lshattn/executor/cuda/executor.cuh"
