# The CPU executor's benchmark (bench/cpu_decode.cpp): links the compiled
# kernels and two copies of Eigen's GEMM (AVX2, AVX-512) as the yardstick for
# the hashing GEMM; the program calls the one the processor can run.
if(TARGET cpu_decode)
  if(TARGET lshattn::cpu)
    target_link_libraries(cpu_decode PRIVATE lshattn::cpu)
    # The two copies come from one source, parts/cpu_eigen.cpp, compiled once
    # per instruction set (an object library each: a source file has one set
    # of flags per target) with that ISA's flags; LSHATTN_BENCH_EIGEN_ISA names
    # the function it defines, lshattn_bench::eigen_gemm_<isa>.
    set(_lshattn_bench_eigen_avx2 -mavx2 -mfma -mf16c)
    set(_lshattn_bench_eigen_avx512 -mavx512f -mavx512cd -mavx512bw -mavx512dq -mavx512vl -mavx2 -mfma -mf16c
        -Wno-maybe-uninitialized)
    foreach(isa IN ITEMS avx2 avx512)
      add_library(cpu_decode_eigen_${isa} OBJECT ${CMAKE_CURRENT_SOURCE_DIR}/parts/cpu_eigen.cpp)
      target_link_libraries(cpu_decode_eigen_${isa} PRIVATE lshattn::lshattn)
      target_compile_definitions(cpu_decode_eigen_${isa} PRIVATE LSHATTN_BENCH_EIGEN_ISA=${isa})
      target_compile_options(cpu_decode_eigen_${isa} PRIVATE ${_lshattn_bench_eigen_${isa}})
      target_sources(cpu_decode PRIVATE $<TARGET_OBJECTS:cpu_decode_eigen_${isa}>)
    endforeach()
  else()
    set_target_properties(cpu_decode PROPERTIES EXCLUDE_FROM_ALL ON)
  endif()
endif()
