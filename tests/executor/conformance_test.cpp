// The conformance suite run for the reference executor against itself: the
// results must be bit-identical (tol_scale 0), which exercises every path of
// the suite that the CPU and CUDA executors run with their own tolerances.
#include "conformance.hpp"

#include <doctest/doctest.h>

TEST_CASE("conformance: reference against itself, every estimator, dtype and shape") {
  lshattn::conformance::run_conformance(lshattn::reference, 0.0);
}

TEST_CASE("conformance: reference rejects every bad input without writing") {
  lshattn::conformance::run_error_conformance(lshattn::reference);
}

TEST_CASE("conformance: reference propagates NaN in keys and values to the reading heads only") {
  lshattn::conformance::run_nan_policy_conformance(lshattn::reference);
}

TEST_CASE("conformance: simhash::hash_batch equals hash bit for bit") {
  lshattn::conformance::check_hash_codes([](const lshattn::hash::simhash<>& f, const float* x, std::size_t n,
                                            std::size_t ld, std::uint32_t* codes) { f.hash_batch(x, n, ld, codes); });
}

// The capability paths the CUDA executor takes (tests/cuda/cuda_conformance_test.cu),
// exercised in CI without a GPU: the reference restricted to what lshattn::cuda
// implements must still pass bit-identically what runs (head_dim 64 fixtures
// for the error and NaN cases, estimator::exact in place of uniform), with the
// declared extra error terms computed (tol_scale 0 ignores them).
TEST_CASE("conformance: a restricted capability set runs what it supports and names the rest as skipped") {
  lshattn::conformance::capabilities caps;
  caps.name = "reference as if lshattn::cuda";
  caps.topk = caps.uniform = caps.oracle_sampling = false;
  caps.head_dims = {64, 128};
  caps.mixed_kv_types = false;
  caps.rejects_non_finite_queries = false;
  caps.weight_rel_error = 0x1p-17;
  caps.lsh_fp32_cosine = true;
  caps.lsh_table_error = 2e-5;
  lshattn::conformance::run_conformance(lshattn::reference, 0.0, caps);
  lshattn::conformance::run_error_conformance(lshattn::reference, caps);
  lshattn::conformance::run_nan_policy_conformance(lshattn::reference, caps);
}
