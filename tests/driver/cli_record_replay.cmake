# Records a vm-mix run through the command line, replays it, and checks the replay matched.
# -DBENCH=path/to/nestor-bench -DDIR=scratch directory
file(MAKE_DIRECTORY ${DIR})
execute_process(COMMAND ${BENCH} --no-progress --ops 3000 --remap-every 500 --pages 512
                        --record ${DIR}/run.nstr
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "recording run failed (${rc}): ${out}${err}")
endif()
execute_process(COMMAND ${BENCH} --no-progress --scenario replay --trace ${DIR}/run.nstr --baseline
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0 OR NOT out MATCHES "cached replay: [0-9]+ records, [1-9][0-9]* translations checked, 0 divergences"
   OR NOT out MATCHES "uncached replay: [0-9]+ records, [1-9][0-9]* translations checked, 0 divergences")
  message(FATAL_ERROR "replay did not match the recording (${rc}): ${out}${err}")
endif()
execute_process(COMMAND ${BENCH} --no-progress --scenario scaling --thread-counts 1,2 --ops 2000
                        --pages 256 --plot ${DIR}/plots
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "plot run failed (${rc}): ${out}${err}")
endif()
foreach(svg throughput-vs-threads latency-cdf)
  file(READ ${DIR}/plots/${svg}.svg text)
  if(NOT text MATCHES "<svg")
    message(FATAL_ERROR "${svg}.svg is not an SVG")
  endif()
endforeach()
file(REMOVE_RECURSE ${DIR})
