#pragma once
// Philox4x32-10, the counter-based generator of Salmon, Moraes, Dror and Shaw,
// "Parallel random numbers: as easy as 1, 2, 3" (SC 2011). A pure function of
// (counter, key): any element of any stream is computed directly, identically
// on every compiler, platform and backend, which is what makes hash codes
// reproducible. Checked against the Random123 known-answer vectors in tests.

#include <array>
#include <cstdint>

#include "lshattn/core/config.hpp"

namespace lshattn::random {

/// Four 32-bit words: a counter or one output block.
using philox_block = std::array<std::uint32_t, 4>;
/// Two 32-bit words: the key.
using philox_key = std::array<std::uint32_t, 2>;

/// Philox4x32 with 10 rounds: maps (counter, key) to 128 random bits.
LSHATTN_HOST_DEVICE constexpr philox_block philox4x32(philox_block ctr, philox_key key) noexcept {
  constexpr std::uint32_t m0 = 0xD2511F53u, m1 = 0xCD9E8D57u;
  constexpr std::uint32_t w0 = 0x9E3779B9u, w1 = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    const std::uint64_t p0 = static_cast<std::uint64_t>(m0) * ctr[0];
    const std::uint64_t p1 = static_cast<std::uint64_t>(m1) * ctr[2];
    const std::uint32_t hi0 = static_cast<std::uint32_t>(p0 >> 32), lo0 = static_cast<std::uint32_t>(p0);
    const std::uint32_t hi1 = static_cast<std::uint32_t>(p1 >> 32), lo1 = static_cast<std::uint32_t>(p1);
    ctr = {hi1 ^ ctr[1] ^ key[0], lo1, hi0 ^ ctr[3] ^ key[1], lo0};
    key[0] += w0;
    key[1] += w1;
  }
  return ctr;
}

/// The key used for a 64-bit seed.
LSHATTN_HOST_DEVICE constexpr philox_key key_of(std::uint64_t seed) noexcept {
  return {static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32)};
}

/// A 53-bit uniform double in [0, 1) from two 32-bit words.
LSHATTN_HOST_DEVICE constexpr double uniform53(std::uint32_t hi, std::uint32_t lo) noexcept {
  const std::uint64_t bits = (static_cast<std::uint64_t>(hi) << 21) ^ (lo >> 11);
  return static_cast<double>(bits & ((std::uint64_t{1} << 53) - 1)) * 0x1p-53;
}

/// A small sequential generator over Philox for host-side sampling (baseline
/// estimators, test data): stream `stream` of seed `seed`, one block per call
/// to refill. Not for hot loops that need random access: call philox4x32.
class philox_engine {
 public:
  using result_type = std::uint32_t;
  constexpr philox_engine(std::uint64_t seed, std::uint64_t stream = 0) noexcept
      : key_(key_of(seed)), stream_(stream) {}
  static constexpr result_type min() noexcept { return 0; }
  static constexpr result_type max() noexcept { return 0xffffffffu; }
  constexpr result_type operator()() noexcept {
    if (pos_ == 4) {
      block_ = philox4x32({static_cast<std::uint32_t>(counter_), static_cast<std::uint32_t>(counter_ >> 32),
                           static_cast<std::uint32_t>(stream_), static_cast<std::uint32_t>(stream_ >> 32)},
                          key_);
      ++counter_;
      pos_ = 0;
    }
    return block_[pos_++];
  }
  /// Uniform double in [0, 1).
  constexpr double uniform() noexcept {
    const std::uint32_t a = (*this)();
    const std::uint32_t b = (*this)();
    return uniform53(a, b);
  }
  /// Uniform integer in [0, n) (n > 0), by Lemire's multiply-shift with rejection.
  constexpr std::uint64_t below(std::uint64_t n) noexcept {
    if (n <= 0xffffffffu) {
      const std::uint32_t n32 = static_cast<std::uint32_t>(n);
      const std::uint32_t threshold = static_cast<std::uint32_t>(-n32) % n32;
      for (;;) {
        const std::uint64_t m = static_cast<std::uint64_t>((*this)()) * n32;
        if (static_cast<std::uint32_t>(m) >= threshold) return m >> 32;
      }
    }
    for (;;) {  // rare: n above 2^32
      const std::uint64_t x = (static_cast<std::uint64_t>((*this)()) << 32) | (*this)();
      const std::uint64_t lim = ~std::uint64_t{0} - (~std::uint64_t{0} % n);
      if (x < lim) return x % n;
    }
  }

 private:
  philox_key key_;
  std::uint64_t stream_;
  std::uint64_t counter_ = 0;
  philox_block block_{};
  int pos_ = 4;
};

}  // namespace lshattn::random
