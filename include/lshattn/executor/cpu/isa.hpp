#pragma once
// Instruction sets of the CPU executor and their run-time selection.
//
// The kernels are compiled once per instruction set, each translation unit
// with its own flags (include/lshattn/executor/cpu/src/, built into the
// static library lshattn::cpu by cmake/parts/cpu.cmake); a binary built for
// baseline x86-64 picks the best set the processor and the operating system
// support when first asked, so it never executes an unsupported instruction.

#include <cstdint>

namespace lshattn {

/// An instruction set of the CPU executor's kernels.
enum class cpu_isa : std::uint8_t {
  automatic,  ///< the best one available (what a default cpu_policy uses)
  sse2,       ///< baseline x86-64; fp16 widened in scalar code
  avx2,       ///< AVX2 + FMA + F16C (Haswell, Zen and later)
  avx512,     ///< AVX-512 F/CD/BW/DQ/VL + FMA + F16C (Skylake-SP, Zen 4 and later)
};

/// Name of an instruction set ("automatic", "sse2", "avx2", "avx512").
inline constexpr const char* to_string(cpu_isa isa) noexcept {
  switch (isa) {
    case cpu_isa::automatic: return "automatic";
    case cpu_isa::sse2: return "sse2";
    case cpu_isa::avx2: return "avx2";
    case cpu_isa::avx512: return "avx512";
  }
  return "unknown";
}

/// Whether this processor and operating system can run the kernels of `isa`
/// (automatic: always true). Defined in lshattn::cpu (src/dispatch.cpp).
bool cpu_isa_available(cpu_isa isa) noexcept;

/// The instruction set a default policy runs: the best available one, unless
/// the environment variable LSHATTN_CPU_ISA (sse2, avx2, avx512) lowers it.
cpu_isa cpu_best_isa() noexcept;

/// Name of cpu_best_isa(), for reports.
const char* cpu_isa_name() noexcept;

}  // namespace lshattn
