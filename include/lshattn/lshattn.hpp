#pragma once
// lshattn: LSH-sampled attention (MagicPIG, Chen et al. 2024, arXiv 2410.16179)
// as a header-only C++20 library. This umbrella header needs no CUDA.
//
// Data flow of a decode step:
//   lsh_index<> index(head_dim, kv_heads, lsh_params{});   // SimHash family + tables
//   index.build(keys, sink, tokens - window);              // prefill: hash + counting sort
//   index.sync(keys, params);                              // decode: append new tokens
//   lshattn::decode(lshattn::reference, estimator::lsh{}, params, request);

#include "lshattn/core/config.hpp"
#include "lshattn/core/dtype.hpp"
#include "lshattn/core/eigen.hpp"
#include "lshattn/core/error.hpp"
#include "lshattn/core/params.hpp"
#include "lshattn/core/state.hpp"
#include "lshattn/core/view.hpp"
#include "lshattn/random/philox.hpp"
#include "lshattn/random/normal.hpp"
#include "lshattn/collision/inclusion.hpp"
#include "lshattn/hash/concepts.hpp"
#include "lshattn/hash/exact_sign.hpp"
#include "lshattn/hash/simhash.hpp"
#include "lshattn/index/lsh_index.hpp"
#include "lshattn/estimator/sample.hpp"
#include "lshattn/estimator/exact.hpp"
#include "lshattn/estimator/lsh.hpp"
#include "lshattn/estimator/topk.hpp"
#include "lshattn/estimator/uniform.hpp"
#include "lshattn/estimator/oracle.hpp"
#include "lshattn/executor/request.hpp"
#include "lshattn/executor/reference.hpp"
#include "lshattn/decode.hpp"
#include "lshattn/workload/synthetic.hpp"
#include "lshattn/quality/uncertainty.hpp"
#include "lshattn/tuner/tuner.hpp"
