# punctum — the version every binary reports (`punctum --version`, each output file's
# punctum_version attribute), included by CMakeLists.txt once punctum_core exists.
#
# cmake/gen-version.cmake computes "<semver>+g<commit>[-dirty]" into generated/pt_version.c; the
# target punctum_version_gen runs it at EVERY build (not only at configure time), and the file
# is rewritten only when the string changes, so a new commit or an edit recompiles one file
# and relinks. punctum_version is a one-file library that punctum_core links publicly: every
# executable built on the core (punctum, punctum-emu, tests, fuzzers) gets the same string.
set(PT_VERSION_COMMIT "" CACHE STRING
    "commit id to report when the source tree has no .git (a packager's tarball); empty: from git")

set(PT_VERSION_C ${CMAKE_BINARY_DIR}/generated/pt_version.c)
set(PT_VERSION_TXT ${CMAKE_BINARY_DIR}/punctum-version.txt) # read by CPack (cmake/install.cmake)
set(_pt_gen_version ${CMAKE_COMMAND} -DSRC=${CMAKE_SOURCE_DIR} -DOUT_C=${PT_VERSION_C}
    -DOUT_TXT=${PT_VERSION_TXT} -DCOMMIT=${PT_VERSION_COMMIT}
    -P ${CMAKE_SOURCE_DIR}/cmake/gen-version.cmake)

# once now, so the source exists for the generator and the configure log shows the version
file(MAKE_DIRECTORY ${CMAKE_BINARY_DIR}/generated)
execute_process(COMMAND ${_pt_gen_version} RESULT_VARIABLE _pt_rc)
if(NOT _pt_rc EQUAL 0)
  message(FATAL_ERROR "punctum: computing the version failed (cmake/gen-version.cmake)")
endif()
file(STRINGS ${PT_VERSION_TXT} PT_VERSION_FULL LIMIT_COUNT 1)
message(STATUS "punctum ${PT_VERSION_FULL} (recomputed at every build)")

add_custom_target(punctum_version_gen
  COMMAND ${_pt_gen_version}
  BYPRODUCTS ${PT_VERSION_C} ${PT_VERSION_TXT}
  COMMENT "punctum version"
  VERBATIM)
add_library(punctum_version STATIC ${PT_VERSION_C})
target_include_directories(punctum_version PRIVATE ${CMAKE_SOURCE_DIR}/include)
add_dependencies(punctum_version punctum_version_gen)
target_link_libraries(punctum_core PUBLIC punctum_version)
