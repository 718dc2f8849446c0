#pragma once
// A persistent pool of std::threads for the CPU executor. One pool per
// process, grown on demand; a parallel region runs `tasks` task indices over
// the first `threads` workers (the caller is worker 0). Idle workers spin
// briefly, then sleep on a futex (std::atomic::wait), so a decode step of a
// fraction of a millisecond is not dominated by wake-ups. Regions from
// different user threads are serialised; a region started from inside a
// region runs inline on the calling worker.

#include <atomic>
#include <cstdint>
#include <type_traits>
#include <cstddef>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace lshattn::executor::cpu_detail {

class thread_pool {
 public:
  /// The process-wide pool.
  static thread_pool& instance() {
    static thread_pool pool;
    return pool;
  }
  /// Hardware threads (at least 1).
  static std::size_t hardware_threads() noexcept {
    const unsigned n = std::thread::hardware_concurrency();
    return n ? n : 1;
  }

  /// Calls f(task, worker) for every task in [0, tasks), on up to `threads`
  /// threads (worker < threads). Blocks until all are done; rethrows the
  /// first exception a task threw.
  template <class F>
  void run(std::size_t threads, std::size_t tasks, F&& f) {
    if (tasks == 0) return;
    if (threads > tasks) threads = tasks;
    if (threads <= 1 || inside()) {
      for (std::size_t t = 0; t < tasks; ++t) f(t, 0);
      return;
    }
    std::lock_guard<std::mutex> lock(region_);
    grow(threads - 1);
    auto* fp = &f;
    job_.call = [](void* ctx, std::size_t t, std::size_t w) { (*static_cast<std::remove_reference_t<F>*>(ctx))(t, w); };
    job_.ctx = fp;
    job_.tasks = tasks;
    job_.next.store(0, std::memory_order_relaxed);
    job_.active = threads - 1;
    job_.error = nullptr;
    // Every helper acknowledges every region, busy or not, so none can
    // still be looking at this job when the next one is written.
    pending_.store(workers_.size(), std::memory_order_relaxed);
    generation_.fetch_add(1, std::memory_order_release);
    generation_.notify_all();
    inside() = true;
    work(0);
    inside() = false;
    for (int spin = 0; pending_.load(std::memory_order_acquire) != 0; ++spin) {
      if (spin < 4096) {
        pause();
      } else {
        const std::size_t p = pending_.load(std::memory_order_acquire);
        if (p) pending_.wait(p, std::memory_order_acquire);
      }
    }
    if (job_.error) std::rethrow_exception(job_.error);
  }

  ~thread_pool() {
    stop_.store(true);
    generation_.fetch_add(1, std::memory_order_release);
    generation_.notify_all();
    for (auto& t : workers_) t.join();
  }

 private:
  struct job {
    void (*call)(void*, std::size_t, std::size_t) = nullptr;
    void* ctx = nullptr;
    std::size_t tasks = 0, active = 0;
    std::atomic<std::size_t> next{0};
    std::exception_ptr error;
    std::mutex error_mutex;
  };

  thread_pool() = default;
  static bool& inside() {
    thread_local bool flag = false;
    return flag;
  }
  static void pause() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
  }
  void grow(std::size_t helpers) {
    while (workers_.size() < helpers) {
      const std::size_t id = workers_.size() + 1;
      const std::uint64_t now = generation_.load(std::memory_order_acquire);
      workers_.emplace_back([this, id, now] { loop(id, now); });
    }
  }
  void work(std::size_t worker) {
    for (;;) {
      const std::size_t t = job_.next.fetch_add(1, std::memory_order_relaxed);
      if (t >= job_.tasks) return;
      try {
        job_.call(job_.ctx, t, worker);
      } catch (...) {
        std::lock_guard<std::mutex> g(job_.error_mutex);
        if (!job_.error) job_.error = std::current_exception();
      }
    }
  }
  void loop(std::size_t id, std::uint64_t seen) {
    inside() = true;
    for (;;) {
      std::uint64_t g = generation_.load(std::memory_order_acquire);
      for (int spin = 0; g == seen; ++spin) {
        if (spin < 20000) {
          pause();
        } else {
          generation_.wait(seen, std::memory_order_acquire);
        }
        g = generation_.load(std::memory_order_acquire);
      }
      seen = g;
      if (stop_.load()) return;
      if (id <= job_.active) work(id);
      if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) pending_.notify_one();
    }
  }

  std::mutex region_;
  std::vector<std::thread> workers_;
  job job_;
  std::atomic<std::uint64_t> generation_{0};
  std::atomic<std::size_t> pending_{0};
  std::atomic<bool> stop_{false};
};

}  // namespace lshattn::executor::cpu_detail
