# Installation and packaging: libraries, headers, a CMake package (find_package(nestor)) and a
# pkg-config file. Included from the top-level CMakeLists.txt once every target exists.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(NESTOR_INSTALL_CMAKEDIR ${CMAKE_INSTALL_LIBDIR}/cmake/nestor)

# Every target the public targets reference must be in the export set, header-only INTERFACE
# ones included: nestor's link interface names nestor_vtd/memory/walkers/caches/invq/events, and an importing
# project must be able to resolve them (nestor_invq is a static archive consumers link too).
install(TARGETS nestor nestor_static nestor_walkers nestor_memory nestor_caches nestor_invq nestor_events
  nestor_vtd
  EXPORT nestorTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})

# Headers: the C ABI, the C++ API and the component headers the C++ API includes. All live
# under include/nestor/ so one -I serves every header, as in the build tree.
install(FILES ${PROJECT_SOURCE_DIR}/engine/include/nestor.h
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
foreach(dir engine walkers memory caches invq events vtd)
  install(DIRECTORY ${PROJECT_SOURCE_DIR}/${dir}/include/nestor
    DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} FILES_MATCHING PATTERN "*.h")
endforeach()

install(EXPORT nestorTargets NAMESPACE nestor:: DESTINATION ${NESTOR_INSTALL_CMAKEDIR})
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/nestorConfig.cmake.in
  ${PROJECT_BINARY_DIR}/nestorConfig.cmake INSTALL_DESTINATION ${NESTOR_INSTALL_CMAKEDIR})
# 0.x: minor versions may break the API, so only the same minor version is compatible.
write_basic_package_version_file(${PROJECT_BINARY_DIR}/nestorConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/nestorConfig.cmake
  ${PROJECT_BINARY_DIR}/nestorConfigVersion.cmake DESTINATION ${NESTOR_INSTALL_CMAKEDIR})

# pkg-config: the prefix is computed from the .pc file's own location (${pcfiledir}) rather
# than baked in, because `cmake --install --prefix <dir>` picks the prefix after configure.
file(RELATIVE_PATH NESTOR_PC_TO_PREFIX
  /prefix/${CMAKE_INSTALL_LIBDIR}/pkgconfig /prefix)
string(REGEX REPLACE "/$" "" NESTOR_PC_TO_PREFIX "${NESTOR_PC_TO_PREFIX}")
configure_file(${PROJECT_SOURCE_DIR}/cmake/nestor.pc.in ${PROJECT_BINARY_DIR}/nestor.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/nestor.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
