// Run-time choice of the CPU executor's kernels. Built for baseline x86-64:
// it only reads CPUID (through xsimd, and through the compiler's
// __builtin_cpu_supports, which also checks that the operating system saves
// the wide registers) and hands out the table of an instruction set the
// processor can run.

#include <cstdlib>
#include <cstring>
#include <xsimd/xsimd.hpp>

#include "lshattn/core/error.hpp"
#include "lshattn/executor/cpu/kernels.hpp"

namespace lshattn::executor::cpu_detail {
extern const kernel_table table_sse2;
extern const kernel_table table_avx2;
extern const kernel_table table_avx512;
}  // namespace lshattn::executor::cpu_detail

namespace lshattn {

bool cpu_isa_available(cpu_isa isa) noexcept {
  const auto archs = xsimd::available_architectures();
  switch (isa) {
    case cpu_isa::automatic: return true;
    case cpu_isa::sse2: return archs.sse2 != 0;
    case cpu_isa::avx2:
      return archs.fma3_avx2 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
             __builtin_cpu_supports("f16c");
    case cpu_isa::avx512:
      return archs.avx512bw && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
             __builtin_cpu_supports("avx512cd") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
  }
  return false;
}

namespace {
cpu_isa detect() noexcept {
  cpu_isa best = cpu_isa_available(cpu_isa::avx512) ? cpu_isa::avx512
                 : cpu_isa_available(cpu_isa::avx2) ? cpu_isa::avx2
                                                    : cpu_isa::sse2;
  // LSHATTN_CPU_ISA can only lower the choice: asking for more than the
  // processor has would be an illegal instruction, so it is ignored then.
  if (const char* env = std::getenv("LSHATTN_CPU_ISA")) {
    for (cpu_isa want : {cpu_isa::sse2, cpu_isa::avx2, cpu_isa::avx512})
      if (std::strcmp(env, to_string(want)) == 0 && want < best) best = want;
  }
  return best;
}
}  // namespace

cpu_isa cpu_best_isa() noexcept {
  static const cpu_isa best = detect();
  return best;
}

const char* cpu_isa_name() noexcept { return to_string(cpu_best_isa()); }

}  // namespace lshattn

namespace lshattn::executor::cpu_detail {

const kernel_table& kernels_for(cpu_isa isa) {
  if (isa == cpu_isa::automatic) isa = cpu_best_isa();
  LSHATTN_REQUIRE(cpu_isa_available(isa), unsupported, "isa", "isa = ", to_string(isa),
                  ": this processor (or operating system) cannot run these kernels; available up to ",
                  to_string(cpu_best_isa()));
  switch (isa) {
    case cpu_isa::avx512: return table_avx512;
    case cpu_isa::avx2: return table_avx2;
    default: return table_sse2;
  }
}

}  // namespace lshattn::executor::cpu_detail
