# Builds the unit tests of the broker's threaded code (the password-check
# helpers in core/bg.c, the store's fsync thread in store/sync.c, the cluster's
# NATS-thread inbox in cluster/inbox.c, its sender threads in
# cluster/sender.c, alone and under a running node, the JetStream worker's
# retire list in cluster/retire.c, and its wait for cnats's delivery worker
# before a stop)
# with
# ThreadSanitizer in a nested build tree and runs them, so the dev build's
# `ctest` (ASan+UBSan, which cannot be combined with TSan) also checks the
# threads. TSan's reports fail a test: its exit code is non-zero.
# cmake -DSRC=<source dir> -DBIN=<scratch build dir> -P tsan_ci.cmake
set(_tests test_bg test_store test_passwd test_cluster_inbox test_cluster_sender test_cluster_retire
  test_cluster_off_loop test_cluster_drain)
execute_process(
  COMMAND ${CMAKE_COMMAND} -S ${SRC} -B ${BIN} -DCMAKE_BUILD_TYPE=Debug -DWISP_SANITIZE=thread
          -DWISP_BUILD_E2E=OFF -DWISP_BUILD_BENCH=OFF
  RESULT_VARIABLE _rc OUTPUT_QUIET)
if(NOT _rc EQUAL 0)
  message(FATAL_ERROR "configuring the ThreadSanitizer build failed (${_rc})")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} --build ${BIN} --target ${_tests} -j2
  RESULT_VARIABLE _rc OUTPUT_QUIET)
if(NOT _rc EQUAL 0)
  message(FATAL_ERROR "building ${_tests} with ThreadSanitizer failed (${_rc})")
endif()
list(JOIN _tests "|" _re)
execute_process(COMMAND ${CMAKE_CTEST_COMMAND} --test-dir ${BIN} -R "^(${_re})$" --output-on-failure
  RESULT_VARIABLE _rc)
if(NOT _rc EQUAL 0)
  message(FATAL_ERROR "a unit test failed under ThreadSanitizer (${_rc})")
endif()
