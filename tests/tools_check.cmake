# CTest test_tools_fail_loudly: a tool the tests need (here openssl, made to
# look missing) must fail the configuration when WISP_REQUIRE_TEST_TOOLS is
# on (the dev preset), and otherwise register a test that fails; it must
# never just leave tests out.
#   cmake -DSRC=<source dir> -DBIN=<scratch dir> -P tools_check.cmake
file(REMOVE_RECURSE ${BIN})
set(_args -S ${SRC} -B ${BIN} -DCMAKE_BUILD_TYPE=Debug -DWISP_OPENSSL=/nonexistent/openssl)

execute_process(COMMAND ${CMAKE_COMMAND} ${_args} -DWISP_REQUIRE_TEST_TOOLS=ON
  RESULT_VARIABLE _rc OUTPUT_VARIABLE _out ERROR_VARIABLE _err)
if(_rc EQUAL 0)
  message(FATAL_ERROR "configuring with openssl missing and WISP_REQUIRE_TEST_TOOLS=ON succeeded")
endif()
if(NOT _err MATCHES "openssl not found: install the Debian package openssl")
  message(FATAL_ERROR "the configuration error does not name the package:\n${_err}")
endif()

execute_process(COMMAND ${CMAKE_COMMAND} ${_args} -DWISP_REQUIRE_TEST_TOOLS=OFF
  RESULT_VARIABLE _rc OUTPUT_VARIABLE _out ERROR_VARIABLE _err)
if(NOT _rc EQUAL 0)
  message(FATAL_ERROR "configuring with WISP_REQUIRE_TEST_TOOLS=OFF failed:\n${_err}")
endif()
execute_process(COMMAND ${CMAKE_CTEST_COMMAND} --test-dir ${BIN} -R "^missing_openssl$"
  RESULT_VARIABLE _rc OUTPUT_VARIABLE _out ERROR_VARIABLE _err)
if(_rc EQUAL 0 OR NOT _out MATCHES "missing_openssl")
  message(FATAL_ERROR "no failing missing_openssl test was registered:\n${_out}${_err}")
endif()
file(REMOVE_RECURSE ${BIN})
message(STATUS "a missing tool fails the configuration, or a test")
