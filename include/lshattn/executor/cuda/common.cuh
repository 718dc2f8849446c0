#pragma once
// Shared pieces of the CUDA executor: turning CUDA errors into lshattn::error
// at the library boundary, an owning device buffer, 16-byte row loads, and the
// exact dot-product sign used to re-decide SimHash bits that fast arithmetic
// cannot certify. Nothing here is public API except cuda_check's error shape:
// errc::backend_failure, argument() "cuda", what() carrying the CUDA error
// name and string.

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>

#include "lshattn/core/dtype.hpp"
#include "lshattn/core/error.hpp"

namespace lshattn::cuda_detail {

/// Throws lshattn::error(backend_failure, "cuda", "<call>: <cudaErrorName>: <string>") unless e is cudaSuccess.
inline void check(cudaError_t e, const char* call, const char* file, int line) {
  if (e == cudaSuccess) return;
  std::string msg = call;
  msg += ": ";
  msg += cudaGetErrorName(e);
  msg += ": ";
  msg += cudaGetErrorString(e);
  throw ::lshattn::error(errc::backend_failure, "cuda", std::move(msg), file, line);
}

}  // namespace lshattn::cuda_detail

/// Checks a CUDA runtime call; a failure becomes lshattn::error(backend_failure).
#define LSHATTN_CUDA_CHECK(expr) ::lshattn::cuda_detail::check((expr), #expr, __FILE__, __LINE__)
/// Checks that the kernel launch just issued was accepted.
#define LSHATTN_CUDA_LAUNCHED(name) ::lshattn::cuda_detail::check(cudaGetLastError(), name, __FILE__, __LINE__)

namespace lshattn::cuda_detail {

/// Owning, move-only device allocation of n elements (cudaMalloc, so never managed memory).
template <class T>
class device_buffer {
 public:
  device_buffer() = default;
  explicit device_buffer(std::size_t n) { reset(n); }
  device_buffer(const device_buffer&) = delete;
  device_buffer& operator=(const device_buffer&) = delete;
  device_buffer(device_buffer&& o) noexcept : p_(std::exchange(o.p_, nullptr)), n_(std::exchange(o.n_, 0)) {}
  device_buffer& operator=(device_buffer&& o) noexcept {
    if (this != &o) {
      release();
      p_ = std::exchange(o.p_, nullptr);
      n_ = std::exchange(o.n_, 0);
    }
    return *this;
  }
  ~device_buffer() { release(); }

  /// Replaces the allocation by one of n elements (contents undefined).
  void reset(std::size_t n) {
    T* p = nullptr;
    if (n) LSHATTN_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&p), n * sizeof(T)));
    release();
    p_ = p;
    n_ = n;
  }
  [[nodiscard]] T* data() const noexcept { return p_; }
  [[nodiscard]] std::size_t size() const noexcept { return n_; }

 private:
  void release() noexcept {
    if (p_) cudaFree(p_);  // cannot throw from a destructor; a failed free leaks at worst
    p_ = nullptr;
    n_ = 0;
  }
  T* p_ = nullptr;
  std::size_t n_ = 0;
};

/// Widen the 2N 16-bit elements packed in N words (bf16 or fp16, low half first) to float.
template <class T, int N>
__device__ __forceinline__ void widen_halves(const unsigned (&w)[N], float* out) {
#pragma unroll
  for (int i = 0; i < N; ++i) {
    if constexpr (std::is_same_v<T, bf16>) {
      out[2 * i] = __uint_as_float(w[i] << 16);
      out[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
    } else {
      out[2 * i] = fp16::to_float(static_cast<std::uint16_t>(w[i] & 0xffffu));
      out[2 * i + 1] = fp16::to_float(static_cast<std::uint16_t>(w[i] >> 16));
    }
  }
}

/// Widen VEC elements packed in 16 bytes to float.
template <class T>
__device__ __forceinline__ void widen16(const uint4& raw, float* out) {
  if constexpr (std::is_same_v<T, float>) {
    out[0] = __uint_as_float(raw.x);
    out[1] = __uint_as_float(raw.y);
    out[2] = __uint_as_float(raw.z);
    out[3] = __uint_as_float(raw.w);
  } else {
    const unsigned w[4] = {raw.x, raw.y, raw.z, raw.w};
    widen_halves<T>(w, out);
  }
}

/// Load 16 bytes through the read-only path.
__device__ __forceinline__ uint4 load16(const void* p) { return __ldg(reinterpret_cast<const uint4*>(p)); }

/// Float as (integer significand, binary exponent): x = M * 2^E exactly, |M| < 2^24.
LSHATTN_HOST_DEVICE void float_parts(float x, std::int64_t& m, int& e) noexcept {
  const std::uint32_t u = ::lshattn::detail::bit_cast<std::uint32_t>(x);
  const int ex = static_cast<int>((u >> 23) & 0xffu);
  std::int64_t mag = u & 0x7fffffu;
  if (ex == 0) {
    e = -149;  // subnormal
  } else {
    mag |= 0x800000;
    e = ex - 150;
  }
  m = (u >> 31) ? -mag : mag;
}

/// Exact sign (-1, 0, +1) of sum_j x_j w_j for finite floats. Each product is
/// an integer below 2^48 times 2^E with E in [-298, 208]; all of them are added
/// into a 576-bit fixed-point accumulator of 32-bit digits held in int64 (carry
/// save: up to 2^31 terms cannot overflow a digit), then normalised once. No
/// rounding anywhere, so the sign is the exact one, as hash/exact_sign.hpp
/// defines it; this form needs no 5 KB expansion array, which would be local
/// memory for every thread of the kernel that calls it.
template <class XAt, class WAt>
LSHATTN_HOST_DEVICE int exact_dot_sign_fixed(XAt x_at, WAt w_at, int n) noexcept {
  constexpr int digits = 18;
  std::int64_t acc[digits] = {};
  for (int j = 0; j < n; ++j) {
    std::int64_t mx, mw;
    int ex, ew;
    float_parts(x_at(j), mx, ex);
    float_parts(w_at(j), mw, ew);
    if (mx == 0 || mw == 0) continue;
    const bool neg = (mx < 0) != (mw < 0);
    const std::uint64_t mag = static_cast<std::uint64_t>(mx < 0 ? -mx : mx) * static_cast<std::uint64_t>(mw < 0 ? -mw : mw);
    const int shift = ex + ew + 298;  // >= 0
    const int d0 = shift >> 5, off = shift & 31;
    const std::uint64_t lo = (mag & 0xffffffffull) << off;  // < 2^63
    const std::uint64_t hi = (mag >> 32) << off;            // < 2^47
    const std::int64_t parts[3] = {static_cast<std::int64_t>(lo & 0xffffffffull),
                                   static_cast<std::int64_t>((lo >> 32) + (hi & 0xffffffffull)),
                                   static_cast<std::int64_t>(hi >> 32)};
    for (int k = 0; k < 3; ++k) acc[d0 + k] += neg ? -parts[k] : parts[k];
  }
  std::int64_t carry = 0;
  bool nonzero = false;
  for (int k = 0; k < digits; ++k) {
    const std::int64_t v = acc[k] + carry;
    carry = v >> 32;  // arithmetic shift: floor division by 2^32
    const std::int64_t digit = v - carry * 4294967296ll;  // in [0, 2^32)
    nonzero = nonzero || digit != 0;
  }
  if (carry < 0) return -1;
  if (carry > 0 || nonzero) return 1;
  return 0;
}

}  // namespace lshattn::cuda_detail
