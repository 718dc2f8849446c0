# The CPU executor's benchmark (bench/cpu_decode.cpp): links the compiled
# kernels and two copies of Eigen's GEMM (AVX2, AVX-512) as the yardstick for
# the hashing GEMM; the program calls the one the processor can run.
if(TARGET cpu_decode)
  if(TARGET lshattn::cpu)
    target_link_libraries(cpu_decode PRIVATE lshattn::cpu)
    target_sources(cpu_decode PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/parts/cpu_eigen_avx2.cpp
                                      ${CMAKE_CURRENT_SOURCE_DIR}/parts/cpu_eigen_avx512.cpp)
    set_source_files_properties(${CMAKE_CURRENT_SOURCE_DIR}/parts/cpu_eigen_avx2.cpp PROPERTIES
      COMPILE_OPTIONS "-mavx2;-mfma;-mf16c")
    set_source_files_properties(${CMAKE_CURRENT_SOURCE_DIR}/parts/cpu_eigen_avx512.cpp PROPERTIES
      COMPILE_OPTIONS "-mavx512f;-mavx512cd;-mavx512bw;-mavx512dq;-mavx512vl;-mavx2;-mfma;-mf16c;-Wno-maybe-uninitialized")
  else()
    set_target_properties(cpu_decode PROPERTIES EXCLUDE_FROM_ALL ON)
  endif()
endif()
