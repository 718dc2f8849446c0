#pragma once
// SimHash, signed random projections (Charikar, "Similarity estimation
// techniques from rounding algorithms", STOC 2002), K bits per table and L
// tables, as used by MagicPIG (Chen et al. 2024, section 4).

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include <Eigen/Core>

#include "lshattn/collision/inclusion.hpp"
#include "lshattn/core/error.hpp"
#include "lshattn/core/params.hpp"
#include "lshattn/hash/exact_sign.hpp"
#include "lshattn/random/normal.hpp"

namespace lshattn::hash {

/// The Philox stream that SimHash hyperplanes are drawn from ('SIMH').
inline constexpr std::uint64_t simhash_stream = 0x53494d48u;

/// A SimHash family: L tables of K hyperplanes in R^dim.
///
/// Hyperplane t of table l is row l*K + t of a [L*K, dim] float matrix whose
/// element (r, j) is N(0,1) variate r*dim + j of Philox stream simhash_stream
/// under the seed (random/normal.hpp): the same seed gives the same matrix on
/// every compiler, platform and backend. Bit t of table l's code of x is
/// [x . w_{l,t} > 0] decided exactly (hash/exact_sign.hpp).
///
/// Code is the unsigned integer type of one table's code; it must hold K bits.
template <class Code = std::uint32_t>
class simhash {
  static_assert(std::is_unsigned_v<Code> && sizeof(Code) <= 4,
                "simhash<Code>: Code must be an unsigned integer of at most 32 bits");

 public:
  using code_type = Code;
  static constexpr int max_bits = std::numeric_limits<Code>::digits;

  simhash() = default;
  /// Draws the hyperplanes. Throws lshattn::error naming dim, K or L when out of range.
  simhash(std::size_t dim, int K, int L, std::uint64_t seed) : dim_(dim), K_(K), L_(L), seed_(seed) {
    LSHATTN_REQUIRE(dim >= 1 && dim <= max_head_dim, invalid_argument, "dim", "dim = ", dim, " must be in 1..",
                    max_head_dim);
    LSHATTN_REQUIRE(K >= 1 && K <= max_bits, invalid_argument, "K", "K = ", K, " must be in 1..", max_bits,
                    " for this code type");
    LSHATTN_REQUIRE(L >= 1 && L <= max_tables, invalid_argument, "L", "L = ", L, " must be in 1..", max_tables);
    planes_.resize(static_cast<std::size_t>(K) * L * dim);
    random::fill_normal(planes_.data(), planes_.size(), seed, simhash_stream);
    plane_norms_.resize(static_cast<std::size_t>(K) * L);
    for (std::size_t r = 0; r < plane_norms_.size(); ++r) {
      double s = 0.0;
      for (std::size_t j = 0; j < dim; ++j) s += static_cast<double>(planes_[r * dim + j]) * planes_[r * dim + j];
      plane_norms_[r] = std::sqrt(s);
    }
  }
  simhash(std::size_t dim, const lsh_params& p) : simhash((p.validate(), dim), p.K, p.L, p.seed) {}

  [[nodiscard]] std::size_t dim() const noexcept { return dim_; }
  [[nodiscard]] int bits() const noexcept { return K_; }
  [[nodiscard]] int tables() const noexcept { return L_; }
  [[nodiscard]] std::uint64_t seed() const noexcept { return seed_; }
  /// Number of distinct codes of one table: 2^K.
  [[nodiscard]] std::uint64_t buckets() const noexcept { return std::uint64_t{1} << K_; }
  /// The hyperplanes, [L*K, dim] row-major.
  [[nodiscard]] const float* hyperplanes() const noexcept { return planes_.data(); }
  [[nodiscard]] std::size_t memory_bytes() const noexcept { return planes_.size() * sizeof(float); }

  /// Codes of one vector x (dim floats) for every table: codes[l], l < L.
  /// Each bit is an fp32 dot product (vectorised by Eigen) accepted when it
  /// clears its rounding bound, else re-decided exactly, as in hash_batch().
  void hash(const float* x, Code* codes) const noexcept {
    using row_major = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    const std::size_t P = static_cast<std::size_t>(K_) * static_cast<std::size_t>(L_);
    const Eigen::Map<const row_major> W(planes_.data(), static_cast<Eigen::Index>(P), static_cast<Eigen::Index>(dim_));
    const Eigen::Map<const Eigen::RowVectorXf> xv(x, static_cast<Eigen::Index>(dim_));
    const double xn = norm64(x);
    for (int l = 0; l < L_; ++l) {
      Code c = 0;
      for (int t = 0; t < K_; ++t) {
        const std::size_t r = static_cast<std::size_t>(l) * K_ + t;
        if (decide(W.row(static_cast<Eigen::Index>(r)).dot(xv), xn, r, x)) c = static_cast<Code>(c | (Code{1} << t));
      }
      codes[l] = c;
    }
  }

  /// Codes of n vectors at once: x is [n, dim] row-major with row stride ld,
  /// codes is [n, L] row-major. One fp32 GEMM (Eigen) decides almost every
  /// bit; a bit whose value lies within the GEMM's rounding bound
  /// gamma_dim * |x| |w| (Higham eq. 3.5 with Cauchy-Schwarz) is re-decided
  /// exactly, so the codes equal hash() bit for bit.
  void hash_batch(const float* x, std::size_t n, std::size_t ld, Code* codes) const {
    using row_major = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    const std::size_t P = static_cast<std::size_t>(K_) * static_cast<std::size_t>(L_);
    const Eigen::Map<const row_major> W(planes_.data(), static_cast<Eigen::Index>(P), static_cast<Eigen::Index>(dim_));
    constexpr std::size_t block = 1024;
    row_major dots;
    for (std::size_t b0 = 0; b0 < n; b0 += block) {
      const std::size_t nb = std::min(block, n - b0);
      const Eigen::Map<const row_major, 0, Eigen::OuterStride<>> X(x + b0 * ld, static_cast<Eigen::Index>(nb),
                                                                    static_cast<Eigen::Index>(dim_),
                                                                    Eigen::OuterStride<>(static_cast<Eigen::Index>(ld)));
      dots.noalias() = X * W.transpose();
      for (std::size_t i = 0; i < nb; ++i) {
        const float* xi = x + (b0 + i) * ld;
        const double xn = norm64(xi);
        const float* drow = dots.data() + i * P;
        Code* out = codes + (b0 + i) * static_cast<std::size_t>(L_);
        for (int l = 0; l < L_; ++l) {
          Code c = 0;
          for (int t = 0; t < K_; ++t) {
            const std::size_t r = static_cast<std::size_t>(l) * K_ + t;
            const bool bit = decide(drow[r], xn, r, xi);
            if (bit) c = static_cast<Code>(c | (Code{1} << t));
          }
          out[l] = c;
        }
      }
    }
  }

  /// Probability that one table's codes of two vectors at this cosine agree.
  [[nodiscard]] double table_collision_probability(double cos_theta) const noexcept {
    return collision::table_collision_probability(collision::bit_collision_probability(cos_theta), K_);
  }

 private:
  // |x| in float64: a float norm underflows for |x| below ~1e-19 while the
  // products do not, and the bound would fall below the dot product's error.
  double norm64(const float* x) const noexcept {
    double s = 0.0;
    for (std::size_t j = 0; j < dim_; ++j) s += static_cast<double>(x[j]) * static_cast<double>(x[j]);
    return std::sqrt(s);
  }

  // Bit r of x from its fp32 dot product v (any summation order, FMA or not):
  // |v - x.w| <= gamma_{d} |x| |w| (Higham, eq. 3.5, with Cauchy-Schwarz), plus
  // an absolute slack for products that underflow; inside that band, or when v
  // overflowed, the sign is decided exactly.
  bool decide(float v, double xn, std::size_t r, const float* x) const noexcept {
    const double u = 0x1p-24 * static_cast<double>(dim_ + 2);
    const double gamma = u / (1.0 - u) * 1.0001;  // margin for the norms' own rounding (~1e-7 relative)
    const double bound = gamma * xn * plane_norms_[r] + 0x1p-120;
    const double dv = static_cast<double>(v);
    if (std::fabs(dv) > bound && std::isfinite(dv)) return dv > 0.0;
    return dot_positive(x, planes_.data() + r * dim_, dim_);
  }

  std::size_t dim_ = 0;
  int K_ = 0, L_ = 0;
  std::uint64_t seed_ = 0;
  std::vector<float> planes_;
  std::vector<double> plane_norms_;  // |w_r|, for hash_batch's rounding bound
};

}  // namespace lshattn::hash
