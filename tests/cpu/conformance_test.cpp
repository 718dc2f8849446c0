#include "lshattn/executor/cpu.hpp"

#include <doctest/doctest.h>

#include "conformance.hpp"

// The executor conformance suite against lshattn::reference with the fp32
// bound of the suite (tol_scale 1), on the instruction set a default policy
// picks, with 3 threads. The kernels of every other available instruction
// set are compared with float64 directly in kernels_test.cpp (the suite
// itself is mostly reference-executor time, so it runs once).
TEST_CASE("cpu executor conformance (best ISA)") {
  INFO("isa " << lshattn::cpu_isa_name());
  lshattn::conformance::run_conformance(lshattn::cpu(3), 1.0);
}

TEST_CASE("cpu executor conformance (sse2, 1 thread)") {
  // The baseline path every x86-64 runs, including its scalar fp16 widening.
  lshattn::conformance::run_conformance(lshattn::cpu(1, lshattn::cpu_isa::sse2), 1.0);
}

TEST_CASE("cpu executor error conformance") { lshattn::conformance::run_error_conformance(lshattn::cpu(2)); }

TEST_CASE("cpu executor NaN policy") { lshattn::conformance::run_nan_policy_conformance(lshattn::cpu(2)); }
