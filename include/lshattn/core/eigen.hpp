#pragma once
// Views over Eigen matrices and maps. Only row-major storage with unit inner
// stride qualifies (a row of head_dim must be contiguous); anything else is a
// compile-time error that says so.

#include <Eigen/Core>

#include "lshattn/core/view.hpp"

namespace lshattn {

/// View a row-major Eigen matrix, Map or Ref as a matrix_view. Rows are
/// vectors (tokens or heads), columns are head_dim.
template <class Derived>
auto view_of(Eigen::PlainObjectBase<Derived>& m) {
  static_assert(Derived::IsRowMajor || Derived::ColsAtCompileTime == 1,
                "lshattn::view_of needs a row-major Eigen matrix (rows are vectors)");
  using T = typename Derived::Scalar;
  return matrix_view<T>(m.data(), static_cast<std::size_t>(m.rows()),
                        static_cast<std::size_t>(m.cols()), static_cast<std::size_t>(m.outerStride()));
}
template <class Derived>
auto view_of(const Eigen::PlainObjectBase<Derived>& m) {
  static_assert(Derived::IsRowMajor || Derived::ColsAtCompileTime == 1,
                "lshattn::view_of needs a row-major Eigen matrix (rows are vectors)");
  using T = const typename Derived::Scalar;
  return matrix_view<T>(m.data(), static_cast<std::size_t>(m.rows()),
                        static_cast<std::size_t>(m.cols()), static_cast<std::size_t>(m.outerStride()));
}
template <class PlainType, int Options, class Stride>
auto view_of(const Eigen::Map<PlainType, Options, Stride>& m) {
  static_assert(PlainType::IsRowMajor, "lshattn::view_of needs a row-major Eigen::Map");
  static_assert(Stride::InnerStrideAtCompileTime == 1 || Stride::InnerStrideAtCompileTime == 0,
                "lshattn::view_of needs unit inner stride");
  using T = std::remove_reference_t<decltype(*m.data())>;
  return matrix_view<T>(m.data(), static_cast<std::size_t>(m.rows()),
                        static_cast<std::size_t>(m.cols()), static_cast<std::size_t>(m.outerStride()));
}

/// A row-major float matrix, the natural Eigen partner of a matrix_view<float>.
using row_matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

}  // namespace lshattn
