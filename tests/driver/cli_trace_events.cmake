# nestor-bench --trace-events: event lines while a vm-mix run goes (QEMU's vtd_* lines where
# QEMU has the event, nestor_<kind> lines for the rest), into a file or stderr, and the last
# line giving what the rate limit dropped per kind.
# -DBENCH=path/to/nestor-bench -DDIR=scratch directory
file(REMOVE_RECURSE ${DIR})
file(MAKE_DIRECTORY ${DIR})
set(run --no-progress --threads 1 --ops 2000 --remap-every 500 --pages 64)

# Every kind, no limit, into a file.
execute_process(COMMAND ${BENCH} ${run} --trace-events all --trace-events-limit 0
                        --trace-events-file ${DIR}/events.log
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT 120)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "run with --trace-events-file failed (${rc}): ${out}${err}")
endif()
if(err MATCHES "vtd_|nestor_")
  message(FATAL_ERROR "events went to stderr, not the file: ${err}")
endif()
file(READ ${DIR}/events.log log)
# Setup (bind layer), walks and hits with their vtd_dmar_translate, the guest remaps' PASID-
# selective range invalidations with what they removed, cache fills.
foreach(line
    "nestor_bind type=owner-created result=0 "
    "nestor_bind type=bound result=0 "
    "vtd_iotlb_page_update IOTLB page update sid 0x[0-9a-f]+ iova 0x[0-9a-f]+ slpte 0x[0-9a-f]+ domain 0x[0-9a-f]+"
    "vtd_iotlb_page_hit IOTLB page hit sid 0x[0-9a-f]+ iova 0x[0-9a-f]+ slpte 0x[0-9a-f]+ domain 0x[0-9a-f]+"
    "vtd_dmar_translate dev [0-9a-f][0-9a-f]:[0-9a-f][0-9a-f]\\.[0-9a-f][0-9a-f] iova 0x[0-9a-f]+ -> gpa 0x[0-9a-f]+ mask 0xfff"
    "vtd_inv_desc_iotlb_pasid_pages iotlb invalidate domain 0x[0-9a-f]+ addr 0x[0-9a-f]+ mask 0x[0-9a-f]+ pasid 0x[0-9a-f]+"
    "nestor_invalidation caches=[a-z,]+ scope=range .* removed=[1-9][0-9]* "
    "nestor_fill cache=iotlb accepted=1 ")
  if(NOT log MATCHES "(^|\n)${line}")
    message(FATAL_ERROR "no line matching '${line}' in ${DIR}/events.log")
  endif()
endforeach()
if(NOT log MATCHES "\nnestor_dropped limit=none translate=0 fault=0 fill=0 invalidation=0 queue=0 bind=0 total=0\n$")
  message(FATAL_ERROR "the events file does not end with the dropped-count line")
endif()

# A limit the run exceeds at once, to stderr: the report still goes to stdout, and the last
# event line counts what was not printed.
execute_process(COMMAND ${BENCH} ${run} --trace-events translate,fill --trace-events-limit 20
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT 120)
if(NOT rc EQUAL 0 OR NOT out MATCHES "page walks \\(misses\\)")
  message(FATAL_ERROR "rate-limited run failed (${rc}): ${out}${err}")
endif()
if(NOT err MATCHES "\nnestor_dropped limit=20/s translate=[0-9]+ fill=[0-9]+ total=[1-9][0-9]*\n$")
  message(FATAL_ERROR "no dropped-count line with drops at the end of stderr: ${err}")
endif()
if(err MATCHES "nestor_bind|vtd_inv_desc")
  message(FATAL_ERROR "kinds not asked for were printed: ${err}")
endif()
string(REGEX MATCHALL "vtd_iotlb_page_[a-z]+ " translations "${err}")
list(LENGTH translations printed)
if(printed EQUAL 0)
  message(FATAL_ERROR "no translation printed under the limit: ${err}")
endif()
file(REMOVE_RECURSE ${DIR})
