#pragma once
// Build-wide macros. Nothing here depends on CUDA: under a host compiler
// LSHATTN_HOST_DEVICE is plain `inline`, so every core header also builds and
// is tested without nvcc (the CuTe convention).

#define LSHATTN_VERSION_MAJOR 0
#define LSHATTN_VERSION_MINOR 1
#define LSHATTN_VERSION_PATCH 0

#if defined(__CUDACC__) || defined(__HIPCC__)
#define LSHATTN_HOST_DEVICE __host__ __device__ inline
#define LSHATTN_DEVICE __device__ inline
#else
#define LSHATTN_HOST_DEVICE inline
#define LSHATTN_DEVICE inline
#endif

namespace lshattn {
/// Library version as {major, minor, patch}.
struct version_info {
  int major, minor, patch;
};
inline constexpr version_info version{LSHATTN_VERSION_MAJOR, LSHATTN_VERSION_MINOR,
                                      LSHATTN_VERSION_PATCH};
}  // namespace lshattn
