# The CPU executor's tests: one doctest program over tests/cpu/*.cpp, linked
# against the compiled kernels. Skipped when lshattn::cpu is not built.
if(TARGET lshattn::cpu)
  lshattn_add_test_folder(cpu lshattn::cpu)
endif()
