#pragma once
// The CPU executor's policy value: lshattn::decode(lshattn::cpu(16), est,
// params, batch). Thread count and instruction set are run-time values; the
// decode step itself is defined in executor.hpp (include
// lshattn/executor/cpu.hpp for everything).

#include <cstddef>
#include <span>

#include "lshattn/core/error.hpp"
#include "lshattn/core/params.hpp"
#include "lshattn/executor/cpu/isa.hpp"
#include "lshattn/executor/cpu/kernels.hpp"
#include "lshattn/executor/cpu/pool.hpp"
#include "lshattn/executor/request.hpp"

namespace lshattn::estimator {
struct sample_set;
}

namespace lshattn::executor {

/// Execution policy of the CPU executor (SIMD kernels, a thread pool).
/// threads = 0 uses every hardware thread; isa = automatic the best
/// instruction set of the processor. Forcing an ISA the processor lacks
/// throws lshattn::error(unsupported, "isa") at the first use.
struct cpu_policy {
  std::size_t threads = 0;
  cpu_isa isa = cpu_isa::automatic;

  /// The same policy with another instruction set (for tests and benchmarks).
  [[nodiscard]] constexpr cpu_policy with_isa(cpu_isa i) const noexcept { return {threads, i}; }
  /// Threads a parallel region uses.
  [[nodiscard]] std::size_t thread_count() const noexcept {
    return threads ? threads : cpu_detail::thread_pool::hardware_threads();
  }
  /// The kernel table this policy runs (throws when the ISA is unavailable).
  [[nodiscard]] const cpu_detail::kernel_table& kernels() const { return cpu_detail::kernels_for(isa); }
  /// Runs f(task, worker) for tasks in [0, n) on thread_count() threads.
  template <class F>
  void parallel_for(std::size_t n, F&& f) const {
    cpu_detail::thread_pool::instance().run(thread_count(), n, std::forward<F>(f));
  }

  /// One decode step for a batch (see lshattn::decode). Defined in executor.hpp.
  template <class Est, element_type TQ, element_type TK, element_type TV, class I>
  void decode(const Est& est, const decode_params& p, std::span<const decode_request<TQ, TK, TV, I>> batch) const;
};

}  // namespace lshattn::executor

namespace lshattn {
/// The CPU executor with `threads` threads (0: all hardware threads) and an
/// instruction set (automatic: the best the processor has).
constexpr executor::cpu_policy cpu(std::size_t threads = 0, cpu_isa isa = cpu_isa::automatic) noexcept {
  return {threads, isa};
}
}  // namespace lshattn
