# Runs one libFuzzer binary for a bounded time on a fresh copy of a corpus.
# cmake -DSRC=<corpus dir> -DWORK=<scratch dir> -DFUZZER=<binary> [-DDICT=<file>] -P run_fuzzer.cmake
file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK}/corpus ${WORK}/artifacts)
file(GLOB _seeds ${SRC}/*)
file(COPY ${_seeds} DESTINATION ${WORK}/corpus)
set(_args -max_total_time=20 -runs=2000000 -max_len=4096 -timeout=10
  -artifact_prefix=${WORK}/artifacts/ ${WORK}/corpus)
if(DICT)
  list(PREPEND _args -dict=${DICT})
endif()
execute_process(COMMAND ${FUZZER} ${_args} RESULT_VARIABLE _rc)
if(NOT _rc EQUAL 0)
  message(FATAL_ERROR "${FUZZER} failed (${_rc}); reproducers in ${WORK}/artifacts")
endif()
