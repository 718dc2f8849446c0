# Checks that the AVX2 and AVX-512 kernel objects define no code that another
# translation unit could share: every function symbol they define must carry
# their instruction set in its name (their own namespace, or a template on
# their xsimd architecture). An inline function compiled with AVX-512 flags
# that the linker could pick for everyone would break the promise that a
# baseline x86-64 binary never executes an unsupported instruction.
# Usage: cmake -DNM=<nm> -DOBJECTS=<a;b;...> -P isa_symbols.cmake
set(bad "")
foreach(obj IN LISTS OBJECTS)
  if(obj MATCHES "kernels_avx512")
    set(tag "avx512")
  elseif(obj MATCHES "kernels_avx2")
    set(tag "avx2")
  else()
    continue()
  endif()
  execute_process(COMMAND ${NM} -C --defined-only ${obj} OUTPUT_VARIABLE out RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "nm failed on ${obj}")
  endif()
  string(REPLACE "\n" ";" lines "${out}")
  foreach(line IN LISTS lines)
    if(line MATCHES "^[0-9a-f]+ ([TtWwVu]) (.*)$")
      set(type "${CMAKE_MATCH_1}")
      set(sym "${CMAKE_MATCH_2}")
      if(type STREQUAL "t" OR type STREQUAL "w")  # local to the object
        continue()
      endif()
      if(sym MATCHES "${tag}" OR sym MATCHES "^DW\\.ref\\.")
        continue()
      endif()
      list(APPEND bad "${obj}: ${type} ${sym}")
    endif()
  endforeach()
endforeach()
if(bad)
  list(JOIN bad "\n" text)
  message(FATAL_ERROR "shared symbols in per-ISA objects:\n${text}")
endif()
message(STATUS "per-ISA objects define only ISA-specific symbols")
