#pragma once
// ln u (the log of a key's inclusion probability, collision/inclusion.hpp)
// as a table over the cosine between query and centred key, for the
// attention kernels: built in double once per (K, L, m) by
// inclusion_table_kernel (cuda_lsh_index keeps one for its own m; the
// executor builds one in the workspace for any other m) and interpolated by
// inclusion_lookup.

#include <cuda_runtime.h>

#include <cmath>

#include "lshattn/collision/inclusion.hpp"
#include "lshattn/core/config.hpp"

namespace lshattn::cuda_detail {

/// ln u at cosine c = -1 + 2 (i - 1) / N for i = 0..N+2 (clamped to [-1, 1]),
/// in double (collision::log_inclusion_probability_at, the reference's ln u),
/// so that attention can interpolate it (inclusion_lookup). The
/// table is over the cosine, not the angle: a float acos alone errs by an ulp
/// of the angle, ~1e-5 in ln u where ln u is steep.
inline constexpr int inclusion_table_size = 4096;  // N: intervals over [-1, 1]

LSHATTN_HOST_DEVICE float inclusion_table_entry(int i, int K, int L, int m) {
  double c = -1.0 + 2.0 * static_cast<double>(i - 1) / inclusion_table_size;
  c = c < -1.0 ? -1.0 : c > 1.0 ? 1.0 : c;
  return static_cast<float>(collision::log_inclusion_probability_at(c, K, L, m));
}

template <int Unused = 0>
__global__ void inclusion_table_kernel(float* table, int K, int L, int m) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i <= inclusion_table_size + 2) table[i] = inclusion_table_entry(i, K, L, m);
}

/// ln u for a key at cosine c. Linear interpolation of the double-precision
/// table where it is certified: its error on a segment is at most h^2/8 times
/// |f''| there, and the table's second differences around the segment (h^2
/// f'' at nearby points) stay below 3e-5, so the error is a few 1e-6 plus the
/// float entries' rounding (host test: <= 2e-5 against
/// collision::inclusion_probability_at). Elsewhere (ln u curving fast as
/// c -> -1, and the sqrt-like corner at c -> 1 when it is not flat) the
/// formula in double. The table replaces ~200 divergent instructions
/// (transcendentals and a tail loop) by four cached loads.
LSHATTN_HOST_DEVICE float inclusion_lookup(float c, const float* table, int K, int L, int m) {
  constexpr int N = inclusion_table_size;
  c = fminf(1.0f, fmaxf(-1.0f, c));
  const float x = (c + 1.0f) * (0.5f * N);
  const int i = static_cast<int>(x) < N - 1 ? static_cast<int>(x) : N - 1;
  const float t = x - static_cast<float>(i);
  const float f0 = table[i], f1 = table[i + 1], f2 = table[i + 2], f3 = table[i + 3];
  const float d1 = f0 - 2.0f * f1 + f2, d2 = f1 - 2.0f * f2 + f3;
  if (fmaxf(fabsf(d1), fabsf(d2)) <= 3e-5f) return fmaf(t, f2 - f1, f1);
  return static_cast<float>(collision::log_inclusion_probability_at(c, K, L, m));
}

inline void launch_inclusion_table(float* table, int K, int L, int m, cudaStream_t stream) {
  inclusion_table_kernel<><<<(inclusion_table_size + 3 + 255) / 256, 256, 0, stream>>>(table, K, L, m);
}

}  // namespace lshattn::cuda_detail
