# lshattn::cpu - the CPU executor's compiled kernels (optional component).
#
# The executor itself is header-only (include/lshattn/executor/cpu/); its SIMD
# kernels are compiled once per instruction set, each source with its own
# flags, into this small static library, and picked at run time. The library
# targets carry no -march: a program linked against lshattn::cpu runs on any
# x86-64 and uses AVX2 or AVX-512 where the processor has them.
#
# Needs xsimd (headers, at build time only) and an x86-64 target; otherwise
# the component is skipped and the rest of lshattn is unaffected.

find_package(xsimd QUIET)
if(NOT xsimd_FOUND)
  message(STATUS "lshattn: xsimd not found, the CPU executor (lshattn::cpu) is not built")
  return()
endif()
if(NOT CMAKE_SYSTEM_PROCESSOR MATCHES "^(x86_64|AMD64|amd64)$")
  message(STATUS "lshattn: the CPU executor's kernels target x86-64; lshattn::cpu is not built on ${CMAKE_SYSTEM_PROCESSOR}")
  return()
endif()
find_package(Threads REQUIRED)

set(_lshattn_cpu_src ${PROJECT_SOURCE_DIR}/include/lshattn/executor/cpu/src)
add_library(lshattn_cpu STATIC
  ${_lshattn_cpu_src}/dispatch.cpp
  ${_lshattn_cpu_src}/kernels_sse2.cpp
  ${_lshattn_cpu_src}/kernels_avx2.cpp
  ${_lshattn_cpu_src}/kernels_avx512.cpp)
add_library(lshattn::cpu ALIAS lshattn_cpu)
set_target_properties(lshattn_cpu PROPERTIES EXPORT_NAME cpu POSITION_INDEPENDENT_CODE ON)
target_compile_features(lshattn_cpu PUBLIC cxx_std_20)
# xsimd is only needed to compile the kernels: consumers never see it. Its
# headers only (the Debian config also links xtl, which nothing here needs).
target_link_libraries(lshattn_cpu PUBLIC lshattn::lshattn)
target_include_directories(lshattn_cpu PRIVATE $<TARGET_PROPERTY:xsimd,INTERFACE_INCLUDE_DIRECTORIES>)
# The thread pool lives in the headers (std::thread); -pthread where the C
# library still needs it.
target_link_libraries(lshattn_cpu INTERFACE $<BUILD_INTERFACE:Threads::Threads>
                                            $<INSTALL_INTERFACE:${CMAKE_THREAD_LIBS_INIT}>)
if(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
  # -O2 on these two sources whatever the build type: unoptimised code leaves
  # out-of-line copies of xsimd's and the standard library's inline functions
  # compiled with AVX flags, which the linker may then pick for the baseline
  # path (tests/cpu/isa_symbols.cmake checks the objects for such symbols).
  set_source_files_properties(${_lshattn_cpu_src}/kernels_avx2.cpp PROPERTIES
    COMPILE_OPTIONS "-mavx2;-mfma;-mf16c;-O2")
  set_source_files_properties(${_lshattn_cpu_src}/kernels_avx512.cpp PROPERTIES
    COMPILE_OPTIONS "-mavx512f;-mavx512cd;-mavx512bw;-mavx512dq;-mavx512vl;-mavx2;-mfma;-mf16c;-Wno-maybe-uninitialized;-O2")
  target_compile_options(lshattn_cpu PRIVATE -Wall -Wextra)
endif()

install(TARGETS lshattn_cpu EXPORT lshattnTargets ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})
