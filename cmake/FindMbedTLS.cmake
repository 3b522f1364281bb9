# FindMbedTLS: mbed TLS has no CMake package on Debian 12 (2.28), so we look
# for the headers and the three libraries ourselves.
#
# Imported targets (static copies whose calloc/free are ours, see below):
#   MbedTLS::mbedcrypto (links wisp_core, wisp_tls_nettle when Nettle is
#   found and wisp_tls_libcrypto when OpenSSL's libcrypto is: see below), MbedTLS::mbedx509 (links mbedcrypto),
#   MbedTLS::mbedtls (links mbedx509, hence mbedtls mbedx509 mbedcrypto in
#   that order, as static linking needs).
# Variables: MbedTLS_FOUND, MbedTLS_VERSION, MbedTLS_INCLUDE_DIR,
#   MbedTLS_LIBRARY, MbedX509_LIBRARY, MbedCrypto_LIBRARY, WISP_TLS_NETTLE,
#   WISP_NETTLE_INCLUDE_DIR, WISP_NETTLE_LIBRARIES, WISP_TLS_LIBCRYPTO.
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
# Faster code behind mbed TLS's slowest primitives (issue 13): Nettle's
# X25519 and P-256 k*G of an ECDSA signature (mbed TLS 2.28's generic bignum
# made a full handshake cost 3.5 times Mosquitto's CPU), and OpenSSL
# libcrypto's AES-GCM (mbed TLS's one-block-at-a-time GCM made a 4 KiB
# message over TLS cost three times Mosquitto's; Nettle's, used first, was
# 1.5-1.8 times slower than libcrypto's here). libcrypto's X25519 is slower
# than Nettle's (70 and 143 us against 46 and 107 us for a key and a shared
# secret through EVP), so Nettle keeps the curves. In the counted copy of
# libmbedcrypto.a, three members are rewritten to call Wisp's functions
# (broker/src/net/tls_ecp.c, tls_gcm.c) instead of mbed TLS's: ecdh.o and
# ecdsa.o call wisp_ecp_mul_restartable for mbedtls_ecp_mul_restartable
# (with Nettle), and cipher.o calls wisp_gcm_crypt_and_tag and
# wisp_gcm_auth_decrypt for mbedtls_gcm_crypt_and_tag and
# mbedtls_gcm_auth_decrypt (with libcrypto). ecp.o and gcm.o keep their own
# functions, which Wisp's call for every case they do not take. Only those
# members change, so the rest of mbed TLS (verification, other curves and
# ciphers) is untouched. Without Nettle's development files (nettle-dev), or
# without libcrypto's (libssl-dev), that member is left as it is and TLS uses
# mbed TLS's code: slower, equally correct. WISP_TLS_NETTLE and
# WISP_TLS_LIBCRYPTO say which; WISP_NETTLE_LIBRARIES and
# WISP_NETTLE_INCLUDE_DIR are what Nettle's needs, OpenSSL::Crypto what
# libcrypto's needs.
find_path(WISP_NETTLE_INCLUDE_DIR NAMES nettle/curve25519.h)
find_library(WISP_HOGWEED_LIBRARY NAMES libhogweed.a)
find_library(WISP_NETTLE_LIBRARY NAMES libnettle.a)
find_library(WISP_GMP_LIBRARY NAMES libgmp.a)
if(MbedTLS_FOUND AND WISP_NETTLE_INCLUDE_DIR AND WISP_HOGWEED_LIBRARY AND WISP_NETTLE_LIBRARY
   AND WISP_GMP_LIBRARY)
  set(WISP_TLS_NETTLE ON)
  set(WISP_NETTLE_LIBRARIES "${WISP_HOGWEED_LIBRARY};${WISP_NETTLE_LIBRARY};${WISP_GMP_LIBRARY}")
else()
  set(WISP_TLS_NETTLE OFF)
  message(STATUS "Nettle (nettle-dev) not found: TLS uses mbed TLS's slower X25519 and P-256")
endif()
mark_as_advanced(WISP_NETTLE_INCLUDE_DIR WISP_HOGWEED_LIBRARY WISP_NETTLE_LIBRARY WISP_GMP_LIBRARY)
find_package(OpenSSL 3.0 QUIET COMPONENTS Crypto)
if(MbedTLS_FOUND AND OPENSSL_CRYPTO_LIBRARY AND TARGET OpenSSL::Crypto)
  set(WISP_TLS_LIBCRYPTO ON)
else()
  set(WISP_TLS_LIBCRYPTO OFF)
  message(STATUS "OpenSSL libcrypto 3 (libssl-dev) not found: TLS uses mbed TLS's slower AES-GCM")
endif()

# Rewrites the members `_members` of `archive` (a list among ecdh.c.o,
# ecdsa.c.o, cipher.c.o) to call Wisp's functions.
function(wisp_mbedtls_fast_hook archive workdir _members)
  set(_rename_ecdh.c.o mbedtls_ecp_mul_restartable=wisp_ecp_mul_restartable)
  set(_rename_ecdsa.c.o mbedtls_ecp_mul_restartable=wisp_ecp_mul_restartable)
  set(_rename_cipher.c.o mbedtls_gcm_crypt_and_tag=wisp_gcm_crypt_and_tag
                         mbedtls_gcm_auth_decrypt=wisp_gcm_auth_decrypt)
  set(_tmp "${workdir}/nettle-hook")
  file(REMOVE_RECURSE "${_tmp}")
  file(MAKE_DIRECTORY "${_tmp}")
  execute_process(COMMAND "${CMAKE_AR}" x "${archive}" ${_members}
                  WORKING_DIRECTORY "${_tmp}" RESULT_VARIABLE _rc)
  if(NOT _rc EQUAL 0)
    message(FATAL_ERROR "mbed TLS: ${archive} has no ${_members}")
  endif()
  foreach(_m ${_members})
    set(_args "")
    foreach(_r ${_rename_${_m}})
      list(APPEND _args --redefine-sym "${_r}")
    endforeach()
    execute_process(COMMAND "${WISP_OBJCOPY}" ${_args} "${_tmp}/${_m}" RESULT_VARIABLE _rc)
    if(NOT _rc EQUAL 0)
      message(FATAL_ERROR "mbed TLS: objcopy failed on ${_m}")
    endif()
  endforeach()
  execute_process(COMMAND "${CMAKE_AR}" r "${archive}" ${_members}
                  WORKING_DIRECTORY "${_tmp}" RESULT_VARIABLE _rc)
  if(NOT _rc EQUAL 0)
    message(FATAL_ERROR "mbed TLS: could not put ${_members} back into ${archive}")
  endif()
  file(REMOVE_RECURSE "${_tmp}")
endfunction()

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
    set(_stamp "${_out}.rewrite")
    set(_rewrite "counted")
    set(_fast_members "")
    if(_lib STREQUAL "MbedCrypto" AND WISP_TLS_NETTLE)
      list(APPEND _rewrite nettle-ecp)
      list(APPEND _fast_members ecdh.c.o ecdsa.c.o)
    endif()
    if(_lib STREQUAL "MbedCrypto" AND WISP_TLS_LIBCRYPTO)
      list(APPEND _rewrite libcrypto-gcm)
      list(APPEND _fast_members cipher.c.o)
    endif()
    set(_done "")
    if(EXISTS "${_stamp}")
      file(READ "${_stamp}" _done)
    endif()
    if(NOT EXISTS "${_out}" OR "${_static}" IS_NEWER_THAN "${_out}" OR NOT _done STREQUAL _rewrite)
      execute_process(COMMAND "${WISP_OBJCOPY}" --redefine-sym calloc=wisp_tls_calloc
                              --redefine-sym free=wisp_tls_free "${_static}" "${_out}"
                      RESULT_VARIABLE _rc)
      if(NOT _rc EQUAL 0)
        message(FATAL_ERROR "mbed TLS: objcopy failed on ${_static}")
      endif()
      if(_fast_members)
        wisp_mbedtls_fast_hook("${_out}" "${_dir}" "${_fast_members}")
      endif()
      file(WRITE "${_stamp}" "${_rewrite}")
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
  unset(_stamp)
  unset(_rewrite)
  unset(_done)
  unset(_fast_members)
endif()

if(MbedTLS_FOUND)
  if(NOT TARGET MbedTLS::mbedcrypto)
    add_library(MbedTLS::mbedcrypto UNKNOWN IMPORTED)
    set_target_properties(MbedTLS::mbedcrypto PROPERTIES
      IMPORTED_LOCATION "${MbedCrypto_LIBRARY}"
      INTERFACE_INCLUDE_DIRECTORIES "${MbedTLS_INCLUDE_DIR}")
    set_property(TARGET MbedTLS::mbedcrypto PROPERTY INTERFACE_LINK_LIBRARIES wisp_core)
    # wisp_tls_nettle and wisp_tls_libcrypto (broker/CMakeLists.txt) define
    # what ecdh.o and ecdsa.o, and cipher.o, now call.
    if(WISP_TLS_NETTLE)
      set_property(TARGET MbedTLS::mbedcrypto APPEND PROPERTY INTERFACE_LINK_LIBRARIES wisp_tls_nettle)
    endif()
    if(WISP_TLS_LIBCRYPTO)
      set_property(TARGET MbedTLS::mbedcrypto APPEND PROPERTY INTERFACE_LINK_LIBRARIES wisp_tls_libcrypto)
    endif()
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
