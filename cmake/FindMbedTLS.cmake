# FindMbedTLS: mbed TLS has no CMake package on Debian 12 (2.28), so we look
# for the headers and the three libraries ourselves.
#
# Imported targets (static copies whose calloc/free are ours, see below):
#   MbedTLS::mbedcrypto (links wisp_core), MbedTLS::mbedx509 (links mbedcrypto),
#   MbedTLS::mbedtls (links mbedx509, hence mbedtls mbedx509 mbedcrypto in
#   that order, as static linking needs).
# Variables: MbedTLS_FOUND, MbedTLS_VERSION, MbedTLS_INCLUDE_DIR,
#   MbedTLS_LIBRARY, MbedX509_LIBRARY, MbedCrypto_LIBRARY.
# Hints: MbedTLS_ROOT.

find_path(MbedTLS_INCLUDE_DIR NAMES mbedtls/ssl.h)
find_library(MbedTLS_LIBRARY NAMES mbedtls)
find_library(MbedX509_LIBRARY NAMES mbedx509)
find_library(MbedCrypto_LIBRARY NAMES mbedcrypto)

# 2.x keeps the version in version.h, 3.x in build_info.h.
set(MbedTLS_VERSION "")
foreach(_hdr mbedtls/build_info.h mbedtls/version.h)
  if(MbedTLS_INCLUDE_DIR AND EXISTS "${MbedTLS_INCLUDE_DIR}/${_hdr}" AND NOT MbedTLS_VERSION)
    file(STRINGS "${MbedTLS_INCLUDE_DIR}/${_hdr}" _ver
         REGEX "^#define[ \t]+MBEDTLS_VERSION_STRING[ \t]+\"[0-9.]+\"")
    if(_ver)
      string(REGEX REPLACE ".*\"([0-9.]+)\".*" "\\1" MbedTLS_VERSION "${_ver}")
    endif()
  endif()
endforeach()
unset(_ver)
unset(_hdr)

include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(MbedTLS
  REQUIRED_VARS MbedTLS_LIBRARY MbedX509_LIBRARY MbedCrypto_LIBRARY MbedTLS_INCLUDE_DIR
  VERSION_VAR MbedTLS_VERSION
  HANDLE_VERSION_RANGE)

# Counted allocations. Debian's mbed
# TLS is built without MBEDTLS_PLATFORM_MEMORY, so its calloc/free cannot be
# replaced at run time (mbedtls_platform_set_calloc_free does not exist).
# Its static archives, though, are position-independent and call only
# calloc and free: we copy them into the build tree with those two symbols
# renamed (objcopy --redefine-sym) to wisp_tls_calloc and wisp_tls_free
# (broker/src/core/alloc.c), and link the copies. Every byte mbed TLS
# allocates then counts in the broker's heap figure and against
# memory_limit. The copies link wisp_core, which defines the two functions.
if(MbedTLS_FOUND)
  find_program(WISP_OBJCOPY NAMES objcopy REQUIRED)
  set(_dir "${CMAKE_BINARY_DIR}/mbedtls-counted")
  file(MAKE_DIRECTORY "${_dir}")
  foreach(_lib MbedTLS MbedX509 MbedCrypto)
    get_filename_component(_base "${${_lib}_LIBRARY}" NAME_WE)
    get_filename_component(_libdir "${${_lib}_LIBRARY}" DIRECTORY)
    set(_static "${_libdir}/${_base}.a")
    if(NOT EXISTS "${_static}")
      message(FATAL_ERROR "mbed TLS: no static library ${_static} (libmbedtls-dev has it): "
                          "Wisp links a copy whose allocations it counts")
    endif()
    set(_out "${_dir}/${_base}.a")
    if(NOT EXISTS "${_out}" OR "${_static}" IS_NEWER_THAN "${_out}")
      execute_process(COMMAND "${WISP_OBJCOPY}" --redefine-sym calloc=wisp_tls_calloc
                              --redefine-sym free=wisp_tls_free "${_static}" "${_out}"
                      RESULT_VARIABLE _rc)
      if(NOT _rc EQUAL 0)
        message(FATAL_ERROR "mbed TLS: objcopy failed on ${_static}")
      endif()
    endif()
    set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS "${_static}")
    set(${_lib}_LIBRARY "${_out}")
  endforeach()
  unset(_dir)
  unset(_lib)
  unset(_base)
  unset(_libdir)
  unset(_static)
  unset(_out)
  unset(_rc)
endif()

if(MbedTLS_FOUND)
  if(NOT TARGET MbedTLS::mbedcrypto)
    add_library(MbedTLS::mbedcrypto UNKNOWN IMPORTED)
    set_target_properties(MbedTLS::mbedcrypto PROPERTIES
      IMPORTED_LOCATION "${MbedCrypto_LIBRARY}"
      INTERFACE_INCLUDE_DIRECTORIES "${MbedTLS_INCLUDE_DIR}")
    set_property(TARGET MbedTLS::mbedcrypto PROPERTY INTERFACE_LINK_LIBRARIES wisp_core)
  endif()
  if(NOT TARGET MbedTLS::mbedx509)
    add_library(MbedTLS::mbedx509 UNKNOWN IMPORTED)
    set_target_properties(MbedTLS::mbedx509 PROPERTIES
      IMPORTED_LOCATION "${MbedX509_LIBRARY}"
      INTERFACE_INCLUDE_DIRECTORIES "${MbedTLS_INCLUDE_DIR}"
      INTERFACE_LINK_LIBRARIES MbedTLS::mbedcrypto)
  endif()
  if(NOT TARGET MbedTLS::mbedtls)
    add_library(MbedTLS::mbedtls UNKNOWN IMPORTED)
    set_target_properties(MbedTLS::mbedtls PROPERTIES
      IMPORTED_LOCATION "${MbedTLS_LIBRARY}"
      INTERFACE_INCLUDE_DIRECTORIES "${MbedTLS_INCLUDE_DIR}"
      INTERFACE_LINK_LIBRARIES MbedTLS::mbedx509)
  endif()
endif()

mark_as_advanced(MbedTLS_INCLUDE_DIR MbedTLS_LIBRARY MbedX509_LIBRARY MbedCrypto_LIBRARY)
