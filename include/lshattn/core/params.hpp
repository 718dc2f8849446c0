#pragma once
// Run-time parameters, validated in one place. Template parameters are kept
// for what changes generated code (element type, code width, executor); K, L,
// m, seeds and sizes live here with documented defaults.

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "lshattn/core/error.hpp"

namespace lshattn {

/// Upper bound on the number of tables L (the paper uses up to 300).
inline constexpr int max_tables = 4096;
/// Upper bound on head_dim accepted by every executor.
inline constexpr std::size_t max_head_dim = 1024;

/// SimHash sampling parameters (MagicPIG, Chen et al. 2024, section 4: K=10,
/// L=150, m=2 cost about 2% of dense attention's work on Llama-3.1-8B).
struct lsh_params {
  int K = 10;   ///< bits per table, 1..32
  int L = 150;  ///< tables, 1..max_tables
  int m = 2;    ///< a key is sampled when it collides with the query in >= m tables, 1..L
  std::uint64_t seed = 0x4c534841'7474656eull;  ///< seeds the hyperplanes (same seed, same codes everywhere)

  /// Throws lshattn::error(invalid_argument) naming the first bad field.
  void validate() const {
    LSHATTN_REQUIRE(K >= 1 && K <= 32, invalid_argument, "K", "K = ", K, " must be in 1..32");
    LSHATTN_REQUIRE(L >= 1 && L <= max_tables, invalid_argument, "L", "L = ", L, " must be in 1..", max_tables);
    LSHATTN_REQUIRE(m >= 1 && m <= L, invalid_argument, "m", "m = ", m, " must be in 1..L (L = ", L, ")");
  }
};

/// Base of the log-sum-exp that accompanies every output. FlashInfer and
/// MagicPIG's reference code use base 2; FlashAttention, xformers and vLLM
/// use the natural log. Internally lshattn always works in natural log and
/// converts once on output: lse_2 = lse_e / ln 2.
enum class lse_base : std::uint8_t { natural, base2 };

/// How one decode step splits and scales the cache.
struct decode_params {
  std::size_t sink = 4;     ///< first tokens always attended exactly
  std::size_t window = 64;  ///< last tokens always attended exactly
  float scale = 0.0f;       ///< score scale; 0 means 1/sqrt(head_dim)
  lse_base base = lse_base::natural;

  void validate() const {
    LSHATTN_REQUIRE(std::isfinite(scale) && scale >= 0.0f, invalid_argument, "scale", "scale = ", scale,
                    " must be finite and >= 0 (0 selects 1/sqrt(head_dim))");
  }
  /// The scale actually applied for a given head_dim.
  [[nodiscard]] double effective_scale(std::size_t head_dim) const noexcept {
    return scale > 0.0f ? static_cast<double>(scale) : 1.0 / std::sqrt(static_cast<double>(head_dim));
  }
};

}  // namespace lshattn
