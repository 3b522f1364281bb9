# The programs the tests run, and what happens when one is missing: a test
# that needs it must never be silently left out, so that `ctest` cannot pass
# on a machine that did not run it.
#
# With WISP_REQUIRE_TEST_TOOLS (set by the dev preset) configuring fails and
# names the Debian package. Without it, configuring warns and registers a
# test named missing_<package> that fails with the same message.
# scripts/deps.sh --test installs every one of them.
include_guard(GLOBAL)

option(WISP_REQUIRE_TEST_TOOLS "Fail configuring when a tool the tests use is missing (dev preset)" OFF)

# Reports `what` as missing; `package` is the Debian package providing it.
function(wisp_missing_tool what package)
  set(_msg "${what} not found: install the Debian package ${package} (scripts/deps.sh --test installs everything the tests use)")
  if(WISP_REQUIRE_TEST_TOOLS)
    message(FATAL_ERROR "${_msg}")
  endif()
  message(WARNING "${_msg}. The tests that need it fail.")
  string(MAKE_C_IDENTIFIER "missing_${package}" _test)
  get_property(_done GLOBAL PROPERTY WISP_MISSING_TOOL_TESTS)
  if(NOT _test IN_LIST _done)
    set_property(GLOBAL APPEND PROPERTY WISP_MISSING_TOOL_TESTS ${_test})
    add_test(NAME ${_test} COMMAND ${CMAKE_COMMAND} -E echo "${_msg}")
    set_tests_properties(${_test} PROPERTIES FAIL_REGULAR_EXPRESSION "not found")
  endif()
endfunction()

# Finds program `name` into the cache variable `var`, or reports `package`
# missing. A path given with -D<var>= must exist.
function(wisp_need_program var name package)
  find_program(${var} NAMES ${name} PATHS /usr/sbin /usr/bin)
  if(NOT ${var} OR NOT EXISTS "${${var}}")
    wisp_missing_tool("${name}" ${package})
  endif()
endfunction()

# Checks that `python` exists and can import `module` (from `package`).
function(wisp_need_python_module python module package)
  if(NOT EXISTS "${python}")
    wisp_missing_tool("${python}" python3)
    return()
  endif()
  execute_process(COMMAND ${python} -c "import ${module}"
    RESULT_VARIABLE _rc OUTPUT_QUIET ERROR_QUIET)
  if(NOT _rc EQUAL 0)
    wisp_missing_tool("the Python module ${module} for ${python}" ${package})
  endif()
endfunction()

# Checks that `clang` can link a libFuzzer target (clang ships it in a
# package it only recommends). A success is remembered.
function(wisp_need_libfuzzer clang)
  if(WISP_LIBFUZZER_OK)
    return()
  endif()
  set(_dir ${CMAKE_BINARY_DIR}/CMakeFiles/wisp_libfuzzer_probe)
  file(WRITE ${_dir}/probe.c
    "#include <stddef.h>\n#include <stdint.h>\n"
    "int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);\n"
    "int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }\n")
  execute_process(COMMAND ${clang} -fsanitize=fuzzer ${_dir}/probe.c -o ${_dir}/probe
    RESULT_VARIABLE _rc OUTPUT_QUIET ERROR_QUIET)
  if(_rc EQUAL 0)
    set(WISP_LIBFUZZER_OK ON CACHE INTERNAL "clang links libFuzzer")
  else()
    wisp_missing_tool("libFuzzer for ${clang}" libclang-rt-14-dev)
  endif()
endfunction()
