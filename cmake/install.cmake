# punctum — installing and packaging, included at the end of CMakeLists.txt (every target exists).
#
#   cmake --install BUILD [--prefix DIR]     default prefix /usr/local
#     bin/punctum                            the engine (punctum-emu too with -DPT_INSTALL_EMU=ON)
#     bin/punctum-verify-model               scripts/verify-model (needs Python + torch + transformers)
#     include/punctum/*.h                    the public headers
#     lib/python3/dist-packages/punctum/     the Python analysis package, as source: importable as is
#                                            under /usr (the .deb); elsewhere put that directory on
#                                            PYTHONPATH (PT_INSTALL_PYTHONDIR moves it)
#     share/man/man1/punctum.1               written at build time from the binary's --help
#     share/doc/punctum/                     README.md, CHANGELOG.md, python-README.md, examples/
#   cpack -G DEB (in BUILD)                  punctum_<version>_<arch>.deb: `apt install ./punctum_*.deb`
include(GNUInstallDirs)

option(PT_INSTALL_EMU "Also install punctum-emu (the CUDA backend on the CPU emulation; slow, for checks)" OFF)
if(CMAKE_CROSSCOMPILING)
  set(_pt_man_default OFF) # the page is made by running the built binary
else()
  set(_pt_man_default ON)
endif()
option(PT_MAN "Write the man page punctum.1 from the built binary's --help at build time" ${_pt_man_default})
set(PT_INSTALL_PYTHONDIR "lib/python3/dist-packages" CACHE STRING
    "where the Python analysis package is installed, relative to the prefix")
set(PT_PACKAGE_MAINTAINER "punctum maintainers <maintainers@punctum.invalid>" CACHE STRING
    "Maintainer field of the .deb")
set(PT_DEB_CUDA_DEPENDS "" CACHE STRING
    "Depends of a CUDA build's .deb (default: the packages owning the linked CUDA runtime and cuBLAS, else NVIDIA's cuda-cudart-X-Y, libcublas-X-Y)")

# ---- run-time search path ----------------------------------------------------------------------
# Installed binaries keep the directories of libraries that the dynamic loader would not find by
# itself, or would find in another build: OpenBLAS's OpenMP build (the `libopenblas.so.0`
# alternative may be the pthread build, which oversubscribes inside our OpenMP regions) and a
# CUDA toolkit outside the system directories.
set(_pt_rpath_libs ${OPENBLAS_LIBRARY})
if(PT_HAVE_REAL_CUDA)
  list(APPEND _pt_rpath_libs ${CUDAToolkit_LIBRARY_DIR}/libcudart.so)
endif()
set(_pt_rpath "")
foreach(lib ${_pt_rpath_libs})
  get_filename_component(dir "${lib}" DIRECTORY)
  list(FIND CMAKE_C_IMPLICIT_LINK_DIRECTORIES "${dir}" implicit)
  if(implicit LESS 0)
    list(APPEND _pt_rpath "${dir}")
  endif()
endforeach()
list(REMOVE_DUPLICATES _pt_rpath)

# ---- what is installed -------------------------------------------------------------------------
set(_pt_programs punctum)
if(PT_INSTALL_EMU AND TARGET punctum-emu)
  list(APPEND _pt_programs punctum-emu)
elseif(PT_INSTALL_EMU)
  message(WARNING "PT_INSTALL_EMU: punctum-emu is not built here (no CUDA headers); not installed")
endif()
set_target_properties(${_pt_programs} PROPERTIES INSTALL_RPATH "${_pt_rpath}")
install(TARGETS ${_pt_programs} RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(PROGRAMS ${CMAKE_SOURCE_DIR}/scripts/verify-model DESTINATION ${CMAKE_INSTALL_BINDIR}
        RENAME punctum-verify-model)
install(DIRECTORY ${CMAKE_SOURCE_DIR}/include/punctum DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
        FILES_MATCHING PATTERN "*.h")
install(DIRECTORY ${CMAKE_SOURCE_DIR}/python/punctum DESTINATION ${PT_INSTALL_PYTHONDIR}
        FILES_MATCHING PATTERN "*.py" PATTERN "__pycache__" EXCLUDE)
install(FILES ${CMAKE_SOURCE_DIR}/README.md ${CMAKE_SOURCE_DIR}/CHANGELOG.md ${CMAKE_SOURCE_DIR}/LICENSE
        DESTINATION ${CMAKE_INSTALL_DOCDIR})
install(FILES ${CMAKE_SOURCE_DIR}/python/README.md DESTINATION ${CMAKE_INSTALL_DOCDIR}
        RENAME python-README.md)
install(FILES ${CMAKE_SOURCE_DIR}/examples/pairs.jsonl DESTINATION ${CMAKE_INSTALL_DOCDIR}/examples)

# ---- the man page, from the binary's own help (cmake/manpage.cmake) ----------------------------
if(PT_MAN)
  set(PT_MANPAGE ${CMAKE_BINARY_DIR}/punctum.1)
  add_custom_command(OUTPUT ${PT_MANPAGE}
    COMMAND ${CMAKE_COMMAND} -E env ASAN_OPTIONS=detect_leaks=0 # a sanitizer build's binary
            ${CMAKE_COMMAND} -DPUNCTUM=$<TARGET_FILE:punctum> -DOUT=${PT_MANPAGE}
            -P ${CMAKE_SOURCE_DIR}/cmake/manpage.cmake
    DEPENDS punctum ${CMAKE_SOURCE_DIR}/cmake/manpage.cmake
    COMMENT "man page punctum.1 from punctum --help"
    VERBATIM)
  add_custom_target(punctum-man ALL DEPENDS ${PT_MANPAGE})
  install(FILES ${PT_MANPAGE} DESTINATION ${CMAKE_INSTALL_MANDIR}/man1)
endif()

# ---- the .deb (cpack -G DEB) -------------------------------------------------------------------
# Depends: what dpkg-shlibdeps finds for the libraries the binaries link (HDF5, OpenBLAS, jansson,
# utf8proc, PCRE2, Open MPI, ...), plus the packages of the libraries kept on the run-time path:
# dpkg-shlibdeps names the generic `libopenblas0`, whose first alternative is the pthread build,
# and NVIDIA's CUDA packages lack the shlibs information it reads (a runfile install has no
# package at all: then NVIDIA's repository names, cuda-cudart-X-Y and libcublas-X-Y).

# The Debian package that owns a library (empty when dpkg knows none).
function(pt_deb_owner lib out)
  set(${out} "" PARENT_SCOPE)
  file(REAL_PATH "${lib}" real)
  execute_process(COMMAND dpkg-query -S "${real}" OUTPUT_VARIABLE owner RESULT_VARIABLE rc
                  ERROR_QUIET OUTPUT_STRIP_TRAILING_WHITESPACE)
  if(rc EQUAL 0 AND owner MATCHES "^([^:, ]+)")
    set(${out} ${CMAKE_MATCH_1} PARENT_SCOPE)
  endif()
endfunction()

set(_pt_depends "")
if(OPENBLAS_LIBRARY MATCHES "openblas-openmp")
  pt_deb_owner(${OPENBLAS_LIBRARY} owner)
  list(APPEND _pt_depends ${owner})
endif()
set(_pt_cuda_note "This build has no cuda backend: it runs on the CPU (OpenBLAS, OpenMP) and
needs no CUDA runtime.")
if(PT_HAVE_REAL_CUDA)
  if(NOT PT_DEB_CUDA_DEPENDS)
    set(_pt_owners "")
    foreach(name cudart cublas cublasLt)
      pt_deb_owner(${CUDAToolkit_LIBRARY_DIR}/lib${name}.so owner)
      list(APPEND _pt_owners ${owner})
    endforeach()
    list(LENGTH _pt_owners n)
    if(n EQUAL 3)
      list(REMOVE_DUPLICATES _pt_owners)
      string(REPLACE ";" ", " PT_DEB_CUDA_DEPENDS "${_pt_owners}")
    else()
      set(_pt_cv ${CUDAToolkit_VERSION_MAJOR}-${CUDAToolkit_VERSION_MINOR})
      set(PT_DEB_CUDA_DEPENDS "cuda-cudart-${_pt_cv}, libcublas-${_pt_cv}")
    endif()
  endif()
  list(APPEND _pt_depends ${PT_DEB_CUDA_DEPENDS})
  set(_pt_cuda_note "This build has the cuda backend (CUDA ${CUDAToolkit_VERSION}): it depends on the
CUDA runtime and cuBLAS (${PT_DEB_CUDA_DEPENDS}), and needs an NVIDIA driver to use a GPU;
without one it runs on the CPU.")
endif()
string(REPLACE ";" ", " _pt_depends "${_pt_depends}")
message(STATUS "punctum .deb: Depends ${_pt_depends} + the packages of the linked libraries")

set(CPACK_PACKAGE_NAME punctum)
set(CPACK_PACKAGE_VENDOR punctum)
set(CPACK_PACKAGE_CONTACT "${PT_PACKAGE_MAINTAINER}")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION}) # the full version is set at cpack time, below
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY
    "attention and ablation statistics for transformer language models over prompt pairs")
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION science)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_DEPENDS "${_pt_depends}")
set(CPACK_DEBIAN_PACKAGE_RECOMMENDS "python3-h5py, python3-numpy, python3-pandas")
set(CPACK_DEBIAN_PACKAGE_SUGGESTS "python3-xarray, python3-matplotlib, openmpi-bin")
set(CPACK_DEBIAN_PACKAGE_DESCRIPTION "punctum runs a decoder-only transformer (a Hugging Face model directory: gpt2,
llama, mistral, qwen2) over the prompt pairs of a JSONL file and writes one HDF5 dataset:
attention mass per token, layer and head, divergences between the two prompts of a pair,
attention knockout, residual patching and the logit lens.

${_pt_cuda_note}

Also installed: the man page punctum(1); punctum-verify-model, which compares punctum with
Hugging Face transformers on a model (it needs Python with torch and transformers); the Python
analysis package (python3 -m punctum report FILE.h5); the C headers.")
# the version of the tree being packaged, not of the last configure (cmake/CPackProjectConfig.cmake.in)
configure_file(${CMAKE_SOURCE_DIR}/cmake/CPackProjectConfig.cmake.in
               ${CMAKE_BINARY_DIR}/CPackProjectConfig.cmake @ONLY)
set(CPACK_PROJECT_CONFIG_FILE ${CMAKE_BINARY_DIR}/CPackProjectConfig.cmake)
include(CPack)
