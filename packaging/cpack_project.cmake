# Read by cpack: a Debian package installs under /usr and /etc (Debian policy
# 9.1), and the unit and conffiles name the paths the build was configured
# with, so a build configured for another prefix cannot make one.
if(CPACK_GENERATOR STREQUAL "DEB" AND NOT CPACK_PACKAGING_INSTALL_PREFIX STREQUAL "/usr")
  message(FATAL_ERROR "cpack -G DEB: configure with -DCMAKE_INSTALL_PREFIX=/usr "
    "(this build installs under ${CPACK_PACKAGING_INSTALL_PREFIX})")
endif()
