# FindMbedTLS: mbed TLS has no CMake package on Debian 12 (2.28), so we look
# for the headers and the three libraries ourselves.
#
# Imported targets:
#   MbedTLS::mbedcrypto, MbedTLS::mbedx509 (links mbedcrypto),
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

if(MbedTLS_FOUND)
  if(NOT TARGET MbedTLS::mbedcrypto)
    add_library(MbedTLS::mbedcrypto UNKNOWN IMPORTED)
    set_target_properties(MbedTLS::mbedcrypto PROPERTIES
      IMPORTED_LOCATION "${MbedCrypto_LIBRARY}"
      INTERFACE_INCLUDE_DIRECTORIES "${MbedTLS_INCLUDE_DIR}")
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
