# The CPU executor's tests: one doctest program over tests/cpu/*.cpp, linked
# against the compiled kernels. Skipped when lshattn::cpu is not built.
if(TARGET lshattn::cpu)
  lshattn_add_test_folder(cpu lshattn::cpu)
endif()
if(TARGET lshattn::cpu AND CMAKE_NM)
  add_test(NAME cpu_isa_symbol_isolation
           COMMAND ${CMAKE_COMMAND} -DNM=${CMAKE_NM} "-DOBJECTS=$<TARGET_OBJECTS:lshattn_cpu>"
                   -P ${CMAKE_CURRENT_SOURCE_DIR}/cpu/isa_symbols.cmake)
endif()
