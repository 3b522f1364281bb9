# Builds the libFuzzer targets with clang in a nested build tree and runs
# each for its bounded time, so a gcc build's `ctest` still fuzzes.
# cmake -DSRC=<source dir> -DBIN=<scratch build dir> -DCLANG=<clang> -P libfuzzer_ci.cmake
execute_process(
  COMMAND ${CMAKE_COMMAND} -S ${SRC} -B ${BIN} -DCMAKE_C_COMPILER=${CLANG} -DCMAKE_BUILD_TYPE=Debug
          -DWISP_BUILD_FUZZ=ON -DWISP_BUILD_E2E=OFF -DWISP_BUILD_BENCH=OFF
  RESULT_VARIABLE _rc OUTPUT_QUIET)
if(NOT _rc EQUAL 0)
  message(FATAL_ERROR "configuring the clang fuzz build failed (${_rc})")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} --build ${BIN} --target ${TARGETS} -j2
  RESULT_VARIABLE _rc OUTPUT_QUIET)
if(NOT _rc EQUAL 0)
  message(FATAL_ERROR "building ${TARGETS} with clang failed (${_rc})")
endif()
execute_process(COMMAND ${CMAKE_CTEST_COMMAND} --test-dir ${BIN} -R "^fuzz_.*_run$" --output-on-failure
  RESULT_VARIABLE _rc)
if(NOT _rc EQUAL 0)
  message(FATAL_ERROR "a libFuzzer run failed (${_rc})")
endif()
