# Flags for the reference-executor benchmark programs (the library target
# imposes none). Benchmarks measure the host they run on, so by default they
# use its instruction set: Eigen's GEMM in hash_batch() and the compiler's
# vectorisation of the scalar reference loops follow -march=native. Turn it
# off to measure the portable x86-64 baseline build.
include(CheckCXXCompilerFlag)
option(LSHATTN_BENCH_NATIVE "Build the reference benchmarks with -march=native" ON)
check_cxx_compiler_flag(-march=native LSHATTN_HAVE_MARCH_NATIVE)
foreach(bench IN ITEMS lshattn_bench_hash lshattn_bench_index lshattn_bench_retrieval lshattn_bench_decode)
  if(TARGET ${bench} AND CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
    target_compile_options(${bench} PRIVATE -Wall -Wextra $<$<CONFIG:Release>:-O3>)
    if(LSHATTN_BENCH_NATIVE AND LSHATTN_HAVE_MARCH_NATIVE)
      target_compile_options(${bench} PRIVATE -march=native)
    endif()
  endif()
endforeach()
