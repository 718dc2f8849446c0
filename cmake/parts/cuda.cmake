# The CUDA executor (include/lshattn/cuda.cuh): an INTERFACE target
# lshattn::cuda for .cu files, built only with -DLSHATTN_ENABLE_CUDA=ON.
if(NOT LSHATTN_ENABLE_CUDA)
  return()
endif()
# CMake 3.25 does not know nvcc's C++20 flag (../shared/docs/toolchain.md).
set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION "-std=c++20")
set(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION "-std=c++20")
if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
  # Hopper (H100/H200). Add 80 for Ampere: -DCMAKE_CUDA_ARCHITECTURES="80;90".
  set(CMAKE_CUDA_ARCHITECTURES 90)
endif()
enable_language(CUDA)
set(CMAKE_CUDA_STANDARD 20)
set(CMAKE_CUDA_STANDARD_REQUIRED ON)
find_package(CUDAToolkit REQUIRED)

add_library(lshattn_cuda INTERFACE)
add_library(lshattn::cuda ALIAS lshattn_cuda)
target_link_libraries(lshattn_cuda INTERFACE lshattn::lshattn CUDA::cudart)
# 20012: Eigen's __host__ __device__ annotations on defaulted functions.
target_compile_options(lshattn_cuda INTERFACE
  $<$<COMPILE_LANGUAGE:CUDA>:--diag-suppress=20012 --expt-relaxed-constexpr>)
