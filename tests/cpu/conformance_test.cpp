#include "lshattn/executor/cpu.hpp"

#include <doctest/doctest.h>

#include "conformance.hpp"

// The executor conformance suite against lshattn::reference, once per
// instruction set this machine can run (the others are covered by the
// dispatch tests in dispatch_test.cpp), with 1 and 3 threads: the fp32 bound
// of the suite, tol_scale 1.
TEST_CASE("cpu executor conformance, every available ISA") {
  for (lshattn::cpu_isa isa : {lshattn::cpu_isa::sse2, lshattn::cpu_isa::avx2, lshattn::cpu_isa::avx512}) {
    if (!lshattn::cpu_isa_available(isa)) continue;
    for (std::size_t threads : {1u, 3u}) {
      INFO("isa " << lshattn::to_string(isa) << ", threads " << threads);
      lshattn::conformance::run_conformance(lshattn::cpu(threads, isa), 1.0);
    }
  }
}

TEST_CASE("cpu executor error conformance") { lshattn::conformance::run_error_conformance(lshattn::cpu(2)); }

TEST_CASE("cpu executor NaN policy") { lshattn::conformance::run_nan_policy_conformance(lshattn::cpu(2)); }
