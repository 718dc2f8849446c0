#pragma once
// The CPU executor's compiled kernels: one table of function pointers per
// instruction set, filled by the per-ISA translation units in src/ and picked
// at run time (isa.hpp). Everything here is plain data and pointers, so the
// public headers need neither xsimd nor any ISA flag.
//
// Vectors handed to the kernels are fp32 and padded with zeros to a multiple
// of kernel_table::pad (16) floats; key and value rows are read in their own
// element type (float, bf16, fp16) and widened inside the kernels.

#include <cstddef>
#include <cstdint>

#include "lshattn/core/dtype.hpp"
#include "lshattn/executor/cpu/isa.hpp"

namespace lshattn::executor::cpu_detail {

/// Floats every padded vector is a multiple of (the widest SIMD register).
inline constexpr std::size_t pad = 16;
/// Round n up to a multiple of pad.
inline constexpr std::size_t padded(std::size_t n) noexcept { return (n + pad - 1) / pad * pad; }

/// ln u as a function of the cosine between query and centred key, for the
/// lsh estimator's inclusion probabilities (MagicPIG eq. for u with the
/// index's K, L, m): linear interpolation on `intervals` equal intervals of
/// [-1, 1]. Interval i holds (value at its left end, slope); an interval whose
/// interpolation error could exceed `tolerance` holds NaN, and cosines there
/// (and outside the table) go to `exact`, which computes ln u in float64.
struct lnu_table {
  const float* entries = nullptr;  ///< [intervals][2]
  std::size_t intervals = 0;
  double (*exact)(double cos_theta, const void* ctx) = nullptr;
  const void* ctx = nullptr;
};

/// How a row's score is corrected before the softmax.
enum class correction : std::uint8_t {
  none,    ///< exact attention: score = scale q.k
  log_pi,  ///< a sample set: score = scale q.k - ln pi_h[i]; pi = 0 (ln pi = -inf) excludes the row for head h
  lsh,     ///< lsh fast path: rows carry a membership mask; ln u from the centred cosine (lnu_table)
};

/// One attention job: `count` rows of one KV head folded into the running
/// online-softmax states of `group` query heads (<= 64). Row i is token
/// ids[i] (or first + i when ids is null). State per head h: acc[h * dpad ..]
/// holds sum_i e^(s_i - mx[h]) v_i, sum[h] = sum_i e^(s_i - mx[h]); start
/// from acc = 0, mx = -inf, sum = 0. Each key and value row is read once for
/// the whole group (GQA).
struct attend_job {
  const void* keys = nullptr;    ///< row t starts at keys + t * key_stride elements
  const void* values = nullptr;
  std::size_t key_stride = 0, value_stride = 0;
  std::size_t dim = 0;           ///< head_dim; dpad = padded(dim)
  const std::uint32_t* ids = nullptr;
  std::size_t first = 0, count = 0;
  const float* q = nullptr;      ///< [group][dpad], zero padded
  std::size_t group = 0;
  float scale = 1.0f;
  correction mode = correction::none;
  const float* log_pi = nullptr;        ///< log_pi mode: [group][log_pi_stride]
  std::size_t log_pi_stride = 0;
  const std::uint64_t* member = nullptr;  ///< lsh mode: [count] bit h set when head h sampled the row
  const float* centre = nullptr;          ///< lsh mode: [dpad] the index's mean key
  const float* q_norm = nullptr;          ///< lsh mode: [group] |q_h| (float64-accurate)
  const lnu_table* lnu = nullptr;         ///< lsh mode
  float* acc = nullptr;                   ///< [group][dpad]
  float* mx = nullptr;                    ///< [group]
  float* sum = nullptr;                   ///< [group]
};

using attend_fn = void (*)(const attend_job&);
/// X[i][0..dpad) = float(rows[i]) - mean (zero padding); norms[i] = |X[i]|
/// rounded up by a relative 2^-10 (an upper bound, for the certified hashing).
using centre_fn = void (*)(const void* rows, std::size_t stride, std::size_t n, const float* mean, std::size_t dim,
                           float* X, std::size_t ldx, float* norms);
/// Columns per packed panel of the GEMM's right-hand side (one 64-bit word of bits).
inline constexpr std::size_t gemm_panel = 64;
/// The sign bits of C = X W^T, C[i][p] = sum_k X[i][k] W[p][k], for rows
/// i < n and columns p < P, without storing C: bit p % 64 of
/// bits[(p / 64) * n + i] = [C[i][p] > 0] and of unsure[...] = [|C[i][p]|
/// <= bound[p] * norms[i] + tiny], the bits whose sign rounding may have
/// flipped; ceil(P / 64) words per row, word-major (so that the codes of one
/// table are extracted from consecutive words). Bits of columns >= P are unspecified. X is
/// [n][ldx]; W is packed in panels of 64 columns: element (k, p) at
/// Wt[(p / 64) * dpad * 64 + k * 64 + p % 64], 64-byte aligned, zero padded;
/// bound has ceil(P / 64) * 64 entries. Any summation order: the rounding
/// bound holds for all.
using gemm_sign_fn = void (*)(const float* X, std::size_t n, std::size_t ldx, const float* Wt, std::size_t dpad,
                              std::size_t P, const float* bound, const float* norms, std::uint64_t* bits,
                              std::uint64_t* unsure);
/// Roofline probes: the sum of n floats read in order, and of `rows` rows of
/// row_floats floats at data + ids[i] * row_floats (a random-row gather).
using stream_fn = float (*)(const float* data, std::size_t n);
using gather_fn = float (*)(const float* data, const std::uint32_t* ids, std::size_t rows, std::size_t row_floats);

/// The kernels of one instruction set.
struct kernel_table {
  cpu_isa isa = cpu_isa::sse2;
  const char* name = "";
  std::size_t width = 4;      ///< floats per SIMD register
  attend_fn attend[3][3]{};   ///< [key dtype][value dtype], indexed by lshattn::dtype
  centre_fn centre[3]{};      ///< [key dtype]
  gemm_sign_fn gemm_sign = nullptr;
  stream_fn stream_sum = nullptr;
  gather_fn gather_sum = nullptr;
};

/// The kernels of `isa` (automatic: cpu_best_isa()). Throws
/// lshattn::error(unsupported, "isa") when this processor cannot run them.
const kernel_table& kernels_for(cpu_isa isa);

}  // namespace lshattn::executor::cpu_detail
