# Issue 13 item 16: the --plot directory reached the gnuplot script as text, so a name with a
# newline ran gnuplot commands ('!cmd'). The charts must land in the oddly named directory
# and nothing else may happen.
# -DBENCH=path/to/nestor-bench -DDIR=scratch directory
file(REMOVE_RECURSE ${DIR})
file(MAKE_DIRECTORY ${DIR})
# gnuplot takes an unterminated string to the end of the line, so the old script ran the
# second line of the name as a shell command in its working directory.
set(plots "${DIR}/p\n!touch injected\nq")
execute_process(WORKING_DIRECTORY ${DIR}
                COMMAND ${BENCH} --no-progress --scenario scaling --thread-counts 1 --ops 500
                        --pages 64 --vms 1 --devices 1 --pasids 1 --plot ${plots}
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "plot run failed (${rc}): ${out}${err}")
endif()
if(EXISTS ${DIR}/injected)
  message(FATAL_ERROR "a command in the --plot name was executed")
endif()
file(READ "${plots}/throughput-vs-threads.svg" text)
if(NOT text MATCHES "<svg")
  message(FATAL_ERROR "throughput-vs-threads.svg is not an SVG")
endif()
file(REMOVE_RECURSE ${DIR})
