# Flags for the example programs only (the library target imposes none).
# The demo is built and run on the same machine by tools/demo.sh, so it may
# use the host's instruction set: hardware FMA inlines the std::fma calls of
# the portable normal generator (bit-identical results, since fma is
# correctly rounded either way) and lets Eigen's GEMM in hash_batch() use
# AVX2/AVX-512. Codes are certified exact whatever the instruction set.
include(CheckCXXCompilerFlag)
option(LSHATTN_EXAMPLES_NATIVE "Build the examples with -march=native" ON)
check_cxx_compiler_flag(-march=native LSHATTN_HAVE_MARCH_NATIVE)
foreach(example IN ITEMS lshattn_demo api_tour)
  if(TARGET ${example} AND CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
    target_compile_options(${example} PRIVATE -Wall -Wextra -Wpedantic $<$<CONFIG:Release>:-O3>)
    if(LSHATTN_EXAMPLES_NATIVE AND LSHATTN_HAVE_MARCH_NATIVE)
      target_compile_options(${example} PRIVATE -march=native)
    endif()
  endif()
endforeach()
