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
