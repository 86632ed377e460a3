# Issue 13 item 12: a storm run ends near its duration. 8 invalidators with 100000-op
# batches and a 0.01 s run used to finish every batch (>= 800000 operations); counted, not
# timed: the batches are now cut short once the run is over.
# -DBENCH=path/to/nestor-bench
execute_process(COMMAND ${BENCH} --scenario storm --invalidators 8 --inv-batch 100000
                        --seconds 0.01 --pages 64 --vms 1 --devices 1 --pasids 1 --json
                        --no-progress
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "storm run failed (${rc}): ${out}${err}")
endif()
string(JSON inv GET "${out}" runs 0 invalidations)
string(JSON n LENGTH "${inv}")
math(EXPR last "${n} - 1")
set(total 0)
foreach(i RANGE ${last})
  string(JSON name MEMBER "${inv}" ${i})
  string(JSON count GET "${inv}" ${name})
  math(EXPR total "${total} + ${count}")
endforeach()
if(NOT total GREATER 0 OR NOT total LESS 800000)
  message(FATAL_ERROR "${total} invalidations: the run did not end near its duration")
endif()
