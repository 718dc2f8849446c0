#pragma once
// The contract a hash family meets. The index and the estimators only use
// this, so a new angular family (cross-polytope, a learned projection) is one
// new type; see hash/simhash.hpp for the model.

#include <concepts>
#include <cstddef>
#include <cstdint>

namespace lshattn::hash {

/// A locality-sensitive family of L tables over R^dim whose collision
/// probability depends only on the angle between the two vectors.
template <class F>
concept family = requires(const F& f, const float* x, typename F::code_type* codes, double c) {
  typename F::code_type;
  requires std::unsigned_integral<typename F::code_type>;
  { f.dim() } -> std::convertible_to<std::size_t>;
  { f.bits() } -> std::convertible_to<int>;        // bits per code
  { f.tables() } -> std::convertible_to<int>;      // L
  { f.buckets() } -> std::convertible_to<std::uint64_t>;  // distinct codes per table
  { f.seed() } -> std::convertible_to<std::uint64_t>;
  f.hash(x, codes);                                // codes[0..L) of vector x
  { f.table_collision_probability(c) } -> std::convertible_to<double>;  // P(one table collides | cos = c)
};

}  // namespace lshattn::hash
