# Runs nestor-bench with ARG0..ARG9 and checks the exit status (STATUS, default 2: the one
# documented status for bad input) and that stdout+stderr match EXPECT.
# -DBENCH=path/to/nestor-bench -DEXPECT=regex [-DSTATUS=n] -DARG0=... -DARG1=...
set(args)
foreach(i RANGE 0 9)
  if(DEFINED ARG${i})
    list(APPEND args "${ARG${i}}")
  endif()
endforeach()
if(NOT DEFINED STATUS)
  set(STATUS 2)
endif()
execute_process(COMMAND ${BENCH} ${args} --no-progress
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT 120)
if(NOT rc STREQUAL "${STATUS}")
  message(FATAL_ERROR "exit status ${rc}, expected ${STATUS}: ${out}${err}")
endif()
if(NOT "${out}${err}" MATCHES "${EXPECT}")
  message(FATAL_ERROR "output does not match '${EXPECT}': ${out}${err}")
endif()
