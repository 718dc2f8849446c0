#pragma once
// Element types for queries, keys and values: float, bf16 and fp16. The two
// 16-bit types are plain storage (layout-compatible with __nv_bfloat16 /
// __half and with the bytes an engine hands us); arithmetic is always done
// after widening to float. Conversions round to nearest even, as hardware does.

#include <cstdint>
#include <type_traits>

#include "lshattn/core/config.hpp"

namespace lshattn {

namespace detail {
template <class To, class From>
LSHATTN_HOST_DEVICE constexpr To bit_cast(const From& f) noexcept {
  static_assert(sizeof(To) == sizeof(From));
  return __builtin_bit_cast(To, f);
}
}  // namespace detail

/// bfloat16 storage: the upper 16 bits of an IEEE float32.
struct bf16 {
  std::uint16_t bits = 0;

  bf16() = default;
  LSHATTN_HOST_DEVICE explicit bf16(float f) noexcept : bits(from_float(f)) {}
  LSHATTN_HOST_DEVICE explicit operator float() const noexcept {
    return detail::bit_cast<float>(static_cast<std::uint32_t>(bits) << 16);
  }
  LSHATTN_HOST_DEVICE static constexpr std::uint16_t from_float(float f) noexcept {
    std::uint32_t u = detail::bit_cast<std::uint32_t>(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((u >> 16) | 0x40u);  // quiet NaN
    u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even
    return static_cast<std::uint16_t>(u >> 16);
  }
  static bf16 from_bits(std::uint16_t b) noexcept {
    bf16 r;
    r.bits = b;
    return r;
  }
};

/// IEEE binary16 storage.
struct fp16 {
  std::uint16_t bits = 0;

  fp16() = default;
  LSHATTN_HOST_DEVICE explicit fp16(float f) noexcept : bits(from_float(f)) {}
  LSHATTN_HOST_DEVICE explicit operator float() const noexcept { return to_float(bits); }

  LSHATTN_HOST_DEVICE static constexpr float to_float(std::uint16_t h) noexcept {
    const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
    std::uint32_t exp = (h >> 10) & 0x1fu;
    std::uint32_t man = h & 0x3ffu;
    std::uint32_t out;
    if (exp == 0x1fu) {
      out = sign | 0x7f800000u | (man << 13);
    } else if (exp != 0) {
      out = sign | ((exp + 112u) << 23) | (man << 13);
    } else if (man == 0) {
      out = sign;
    } else {  // subnormal: normalise
      exp = 113u;
      while ((man & 0x400u) == 0) {
        man <<= 1;
        --exp;
      }
      out = sign | (exp << 23) | ((man & 0x3ffu) << 13);
    }
    return detail::bit_cast<float>(out);
  }

  LSHATTN_HOST_DEVICE static constexpr std::uint16_t from_float(float f) noexcept {
    const std::uint32_t u = detail::bit_cast<std::uint32_t>(f);
    const std::uint32_t sign = (u >> 16) & 0x8000u;
    const std::uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return static_cast<std::uint16_t>(sign | 0x7e00u);  // NaN
    if (a >= 0x477ff000u) return static_cast<std::uint16_t>(sign | 0x7c00u);  // overflow -> Inf
    if (a >= 0x38800000u) {  // normal half
      std::uint32_t r = a - 0x38000000u;  // rebias exponent 127 -> 15
      r += 0xfffu + ((r >> 13) & 1u);
      return static_cast<std::uint16_t>(sign | (r >> 13));
    }
    if (a < 0x33000000u) return static_cast<std::uint16_t>(sign);  // rounds to zero
    // subnormal half: shift the full significand, round to nearest even
    const std::uint32_t e = a >> 23;
    const std::uint32_t m = (a & 0x7fffffu) | 0x800000u;
    const std::uint32_t shift = 126u - e;  // 14..24
    std::uint32_t r = m >> shift;
    const std::uint32_t rem = m & ((1u << shift) - 1u);
    const std::uint32_t half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (r & 1u))) ++r;
    return static_cast<std::uint16_t>(sign | r);
  }
  static fp16 from_bits(std::uint16_t b) noexcept {
    fp16 r;
    r.bits = b;
    return r;
  }
};

/// The element types lshattn accepts for queries, keys and values.
template <class T>
concept element_type = std::is_same_v<T, float> || std::is_same_v<T, bf16> || std::is_same_v<T, fp16>;

/// Widen any element type to float.
template <element_type T>
LSHATTN_HOST_DEVICE float to_float(T x) noexcept {
  if constexpr (std::is_same_v<T, float>) return x;
  else return static_cast<float>(x);
}

/// Round a float to an element type.
template <element_type T>
LSHATTN_HOST_DEVICE T from_float(float x) noexcept {
  if constexpr (std::is_same_v<T, float>) return x;
  else return T(x);
}

/// Run-time tag of an element type, for reports and dispatch.
enum class dtype : std::uint8_t { f32, bf16, f16 };

template <element_type T>
inline constexpr dtype dtype_of = std::is_same_v<T, float> ? dtype::f32
                                  : std::is_same_v<T, bf16> ? dtype::bf16
                                                            : dtype::f16;

inline constexpr const char* to_string(dtype t) noexcept {
  return t == dtype::f32 ? "f32" : t == dtype::bf16 ? "bf16" : "f16";
}

}  // namespace lshattn
