#pragma once
// Non-owning strided views over the caller's buffers. Elements within a row
// are contiguous (every kernel streams rows of head_dim); rows and heads may be
// strided, so a view can address one head of an interleaved [tokens, heads, d]
// cache, a paged engine's slab, or an Eigen matrix without a copy.

#include <cstddef>
#include <cstdint>
#include <span>

#include "lshattn/core/config.hpp"
#include "lshattn/core/dtype.hpp"
#include "lshattn/core/error.hpp"

namespace lshattn {

/// A rows x cols row-major matrix: element (r, c) is data[r * row_stride + c].
/// Shapes: queries [heads, head_dim]; outputs [heads, head_dim].
template <class T>
struct matrix_view {
  T* data = nullptr;
  std::size_t rows = 0;
  std::size_t cols = 0;
  std::size_t row_stride = 0;  ///< elements between consecutive rows; >= cols

  constexpr matrix_view() = default;
  constexpr matrix_view(T* p, std::size_t r, std::size_t c) noexcept
      : data(p), rows(r), cols(c), row_stride(c) {}
  constexpr matrix_view(T* p, std::size_t r, std::size_t c, std::size_t stride) noexcept
      : data(p), rows(r), cols(c), row_stride(stride) {}
  /// Implicit conversion to a view of const elements.
  template <class U>
    requires(std::is_same_v<const U, T> && !std::is_same_v<U, T>)
  constexpr matrix_view(const matrix_view<U>& o) noexcept
      : data(o.data), rows(o.rows), cols(o.cols), row_stride(o.row_stride) {}

  LSHATTN_HOST_DEVICE T* row(std::size_t r) const noexcept { return data + r * row_stride; }
  LSHATTN_HOST_DEVICE T& operator()(std::size_t r, std::size_t c) const noexcept {
    return data[r * row_stride + c];
  }
  [[nodiscard]] constexpr bool empty() const noexcept { return rows == 0 || cols == 0; }
};

/// A KV cache of one layer: [heads, tokens, head_dim]. Row (h, t) starts at
/// data + h * head_stride + t * token_stride. A contiguous [heads, tokens, d]
/// buffer has token_stride = d and head_stride = tokens * d; an interleaved
/// [tokens, heads, d] buffer has token_stride = heads * d and head_stride = d.
template <class T>
struct cache_view {
  T* data = nullptr;
  std::size_t heads = 0;
  std::size_t tokens = 0;
  std::size_t dim = 0;
  std::size_t head_stride = 0;   ///< elements between heads
  std::size_t token_stride = 0;  ///< elements between tokens; >= dim

  constexpr cache_view() = default;
  /// Contiguous [heads, tokens, dim].
  constexpr cache_view(T* p, std::size_t h, std::size_t n, std::size_t d) noexcept
      : data(p), heads(h), tokens(n), dim(d), head_stride(n * d), token_stride(d) {}
  constexpr cache_view(T* p, std::size_t h, std::size_t n, std::size_t d, std::size_t hs,
                       std::size_t ts) noexcept
      : data(p), heads(h), tokens(n), dim(d), head_stride(hs), token_stride(ts) {}
  template <class U>
    requires(std::is_same_v<const U, T> && !std::is_same_v<U, T>)
  constexpr cache_view(const cache_view<U>& o) noexcept
      : data(o.data), heads(o.heads), tokens(o.tokens), dim(o.dim), head_stride(o.head_stride),
        token_stride(o.token_stride) {}

  LSHATTN_HOST_DEVICE T* row(std::size_t h, std::size_t t) const noexcept {
    return data + h * head_stride + t * token_stride;
  }
  /// One head as a [tokens, dim] matrix.
  constexpr matrix_view<T> head(std::size_t h) const noexcept {
    return {data + h * head_stride, tokens, dim, token_stride};
  }
  /// The first n tokens (n <= tokens): a cache that is still being filled.
  constexpr cache_view prefix(std::size_t n) const noexcept {
    return {data, heads, n, dim, head_stride, token_stride};
  }
};

namespace detail {
template <class T>
void check_view(const matrix_view<T>& v, const char* name) {
  LSHATTN_REQUIRE(v.data != nullptr || v.rows == 0 || v.cols == 0, invalid_argument, name,
                  "data is null for a ", v.rows, " x ", v.cols, " view");
  LSHATTN_REQUIRE(v.rows <= 1 || v.row_stride >= v.cols, invalid_argument, name,
                  "row_stride = ", v.row_stride, " is smaller than cols = ", v.cols);
}
template <class T>
void check_view(const cache_view<T>& v, const char* name) {
  LSHATTN_REQUIRE(v.data != nullptr || v.heads * v.tokens * v.dim == 0, invalid_argument, name,
                  "data is null for a [", v.heads, ", ", v.tokens, ", ", v.dim, "] cache");
  LSHATTN_REQUIRE(v.tokens <= 1 || v.token_stride >= v.dim, invalid_argument, name,
                  "token_stride = ", v.token_stride, " is smaller than dim = ", v.dim);
}
}  // namespace detail

}  // namespace lshattn
