# GPU tests: one program; without a GPU it exits 77 and CTest reports it skipped.
if(NOT LSHATTN_ENABLE_CUDA)
  return()
endif()
# cuda_test.cu holds main(); cuda_conformance_test.cu runs the executor
# conformance suite through tests/cuda/conformance_adapter.cuh.
add_executable(lshattn_test_cuda ${CMAKE_CURRENT_SOURCE_DIR}/cuda/cuda_test.cu
                                 ${CMAKE_CURRENT_SOURCE_DIR}/cuda/cuda_conformance_test.cu)
target_link_libraries(lshattn_test_cuda PRIVATE lshattn::cuda doctest::doctest)
target_include_directories(lshattn_test_cuda PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/support)
add_test(NAME cuda.all COMMAND lshattn_test_cuda)
set_tests_properties(cuda.all PROPERTIES SKIP_RETURN_CODE 77)
