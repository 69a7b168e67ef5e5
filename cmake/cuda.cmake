# punctum — the CUDA backend (kernels/) and its CPU emulation build (tests/emu/), included by
# CMakeLists.txt. Everything here is optional and guarded:
#
#   nvcc found (and PT_CUDA=ON, default)      the real backend goes into punctum_core / punctum;
#                                             CMAKE_CUDA_ARCHITECTURES defaults to "80;90".
#   CUDA headers found (PT_CUDA_EMU=ON, def.) punctum-emu: the same main/engine sources with the
#                                             backend compiled as host C++ against tests/emu/, and
#                                             the `cuda-emu` tests.
#   neither                                   nothing changes: cuda_absent.c provides the stubs.
#
# Kernel sources are compiled once per build kind: kernels/cuda_backend.cu by nvcc, and the same
# file included by tests/emu/emu_backend.cpp for the emulation.

option(PT_CUDA "Build the CUDA backend into punctum when nvcc is available" ON)
option(PT_CUDA_EMU "Build punctum-emu (CUDA backend on the CPU emulation) when CUDA headers are available" ON)
option(PT_CUDA_MMA "Tensor-core (mma.sync) attention path for bf16/f16" ON)
option(PT_CUDA_EMU_CHECKS "Emulation: trace the kernels' memory accesses (tests/emu/cuda_emu_check.cpp)" ON)

# What punctum_core was configured with, before anything CUDA is added to it (the emulation
# build compiles the same sources with the same settings).
get_target_property(PT_CORE_LIBS punctum_core LINK_LIBRARIES)
get_target_property(PT_CORE_INCS punctum_core INCLUDE_DIRECTORIES)
get_target_property(PT_CORE_DEFS punctum_core COMPILE_DEFINITIONS)
foreach(v PT_CORE_LIBS PT_CORE_INCS PT_CORE_DEFS)
  if(NOT ${v})
    set(${v} "")
  endif()
endforeach()

# ---- CUDA headers (for the emulation; no GPU and no nvcc needed) -----------------------------
set(PT_CUDA_INCLUDE_DIR "")
if(PT_CUDA_EMU)
  find_package(CUDAToolkit QUIET)
  set(_pt_hint_dirs)
  if(CUDAToolkit_FOUND)
    list(APPEND _pt_hint_dirs ${CUDAToolkit_INCLUDE_DIRS})
  endif()
  list(APPEND _pt_hint_dirs $ENV{CUDA_HOME}/include $ENV{CUDA_PATH}/include /usr/local/cuda/include
       /opt/cuda/include /usr/include)
  find_path(PT_CUDA_INCLUDE_DIR_FOUND NAMES cublasLt.h PATHS ${_pt_hint_dirs} NO_DEFAULT_PATH)
  if(PT_CUDA_INCLUDE_DIR_FOUND AND EXISTS ${PT_CUDA_INCLUDE_DIR_FOUND}/cuda_runtime_api.h
     AND EXISTS ${PT_CUDA_INCLUDE_DIR_FOUND}/cuda_bf16.h)
    set(PT_CUDA_INCLUDE_DIR ${PT_CUDA_INCLUDE_DIR_FOUND})
  endif()
endif()

# ---- the real backend (nvcc) -----------------------------------------------------------------
set(PT_HAVE_REAL_CUDA OFF)
if(PT_CUDA)
  include(CheckLanguage)
  if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
    set(CMAKE_CUDA_ARCHITECTURES "80;90")
  endif()
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    enable_language(CUDA)
    find_package(CUDAToolkit REQUIRED)
    set(PT_HAVE_REAL_CUDA ON)
  endif()
endif()

set(PT_CUDA_BACKEND_BUILT ${PT_HAVE_REAL_CUDA} CACHE INTERNAL "the cuda backend is compiled into punctum")
if(PT_HAVE_REAL_CUDA)
  message(STATUS "punctum: CUDA backend ON (nvcc ${CMAKE_CUDA_COMPILER_VERSION}, architectures ${CMAKE_CUDA_ARCHITECTURES})")
  set(CMAKE_CUDA_STANDARD 17)
  set(CMAKE_CUDA_STANDARD_REQUIRED ON)
  # The top-level add_compile_options(-Wall -Wextra ...) are host-compiler flags: nvcc takes
  # them through -Xcompiler. Rewrite punctum_core's options per language.
  get_target_property(_pt_opts punctum_core COMPILE_OPTIONS)
  set(_pt_new_opts)
  if(_pt_opts)
    foreach(o ${_pt_opts})
      list(APPEND _pt_new_opts "$<$<COMPILE_LANGUAGE:C,CXX>:${o}>" "$<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=${o}>")
      if(o STREQUAL "-Werror")
        list(APPEND _pt_new_opts "$<$<COMPILE_LANGUAGE:CUDA>:--Werror=all-warnings>")
      endif()
    endforeach()
    set_target_properties(punctum_core PROPERTIES COMPILE_OPTIONS "${_pt_new_opts}")
  endif()
  target_sources(punctum_core PRIVATE ${CMAKE_SOURCE_DIR}/kernels/cuda_backend.cu)
  target_include_directories(punctum_core PRIVATE ${CMAKE_SOURCE_DIR}/kernels)
  target_compile_definitions(punctum_core PRIVATE PT_HAVE_CUDA PT_CUDA_MMA=$<BOOL:${PT_CUDA_MMA}>)
  target_compile_options(punctum_core PRIVATE
    $<$<COMPILE_LANGUAGE:CUDA>:-lineinfo --expt-relaxed-constexpr -Xptxas=-warn-spills>)
  target_link_libraries(punctum_core PUBLIC CUDA::cudart CUDA::cublas CUDA::cublasLt)
  # (CMAKE_CUDA_STANDARD above only reaches targets created after it: punctum_core is older)
  set_target_properties(punctum_core PROPERTIES CUDA_SEPARABLE_COMPILATION OFF CUDA_STANDARD 17
                                                CUDA_STANDARD_REQUIRED ON)
  # Targets defined before CUDA was enabled (punctum, the unit tests) link CUDA code through
  # punctum_core and need the architectures too.
  get_property(_pt_targets DIRECTORY ${CMAKE_SOURCE_DIR} PROPERTY BUILDSYSTEM_TARGETS)
  foreach(t ${_pt_targets})
    get_target_property(_pt_type ${t} TYPE)
    if(NOT _pt_type STREQUAL "INTERFACE_LIBRARY" AND NOT _pt_type STREQUAL "UTILITY")
      set_target_properties(${t} PROPERTIES CUDA_ARCHITECTURES "${CMAKE_CUDA_ARCHITECTURES}")
    endif()
  endforeach()
elseif(PT_CUDA)
  message(STATUS "punctum: CUDA backend OFF (no nvcc found)")
endif()

# ---- Python for the end-to-end tests (torch, transformers, h5py: scripts/setup.sh's venv) -------
set(PT_PYTHON "" CACHE FILEPATH "Python with torch, transformers, h5py for the end-to-end tests")
if(PT_PYTHON)
  set(_pt_py ${PT_PYTHON})
elseif(EXISTS $ENV{HOME}/.cache/punctum/venv/bin/python)
  set(_pt_py $ENV{HOME}/.cache/punctum/venv/bin/python)
else()
  find_program(_pt_py NAMES python3)
endif()

# ---- the emulation build ----------------------------------------------------------------------
enable_testing()
if(PT_CUDA_INCLUDE_DIR)
  message(STATUS "punctum: punctum-emu ON (CUDA headers: ${PT_CUDA_INCLUDE_DIR})")
  # The emulation's C++ (only tests/emu and the kernels use C++) prefers clang++: its TSan
  # instrumentation sees every load and store, while GCC's misses a store that receives a
  # non-inlined call's result (`*p = __float2half_rn(v)`) and a struct passed from memory to a
  # call. Not under PT_SANITIZE, where C (gcc) and C++ objects must share one ASan runtime.
  # An explicit CMAKE_CXX_COMPILER / CXX wins; the choice is cached with the build directory.
  if(NOT CMAKE_CXX_COMPILER AND NOT DEFINED ENV{CXX} AND PT_CUDA_EMU_CHECKS AND NOT PT_SANITIZE)
    find_program(PT_CLANGXX NAMES clang++ clang++-14 clang++-15 clang++-16)
    if(PT_CLANGXX)
      set(CMAKE_CXX_COMPILER ${PT_CLANGXX})
    endif()
  endif()
  enable_language(CXX)
  if(CMAKE_CXX_COMPILER_ID MATCHES "Clang")
    # DWARF 4: valgrind (scripts/valgrind.sh) cannot read clang 14's DWARF 5 (it gives up)
    add_compile_options($<$<COMPILE_LANGUAGE:CXX>:-fdebug-default-version=4>)
  endif()
  if(PT_CUDA_EMU_CHECKS AND NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang")
    message(STATUS "punctum: emulation compiled by ${CMAKE_CXX_COMPILER_ID}: access tracing misses stores of "
                   "call results (kernels write half/bf16 through pt_st); clang++ traces everything")
  endif()
  set(CMAKE_CXX_STANDARD 17)
  set(CMAKE_CXX_STANDARD_REQUIRED ON)
  set(CMAKE_CXX_EXTENSIONS ON)

  add_library(punctum_core_emu STATIC ${PT_CORE_SOURCES}
    ${CMAKE_SOURCE_DIR}/tests/emu/cuda_emu.cpp
    ${CMAKE_SOURCE_DIR}/tests/emu/cuda_emu_check.cpp
    ${CMAKE_SOURCE_DIR}/tests/emu/cuda_emu_roofline.cpp
    ${CMAKE_SOURCE_DIR}/tests/emu/emu_backend.cpp)
  target_include_directories(punctum_core_emu PUBLIC ${PT_CORE_INCS})
  target_include_directories(punctum_core_emu PRIVATE ${CMAKE_SOURCE_DIR}/kernels ${CMAKE_SOURCE_DIR}/tests/emu)
  target_include_directories(punctum_core_emu SYSTEM PRIVATE ${PT_CUDA_INCLUDE_DIR})
  target_compile_definitions(punctum_core_emu PUBLIC ${PT_CORE_DEFS})
  target_compile_definitions(punctum_core_emu PRIVATE PT_HAVE_CUDA PT_CUDA_EMU PT_CUDA_MMA=$<BOOL:${PT_CUDA_MMA}>)
  target_link_libraries(punctum_core_emu PUBLIC ${PT_CORE_LIBS} ${CMAKE_DL_LIBS})

  # Access tracing (SPEC §6 checks): the kernels' translation units are compiled with
  # -fsanitize=thread, whose instrumentation calls __tsan_read4(addr) & co. before every load
  # and store; cuda_emu_check.cpp implements those hooks (the TSan runtime is never linked).
  # Function entry/exit hooks are not needed. Under PT_SANITIZE (ASan, which excludes TSan in a
  # translation unit) the backend keeps ASan and runs untraced; the self-test stays traced.
  set(_pt_trace_opts "")
  if(PT_CUDA_EMU_CHECKS)
    include(CheckCXXSourceCompiles)
    if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
      set(_pt_trace_try -fsanitize=thread --param=tsan-instrument-func-entry-exit=0)
    else()
      set(_pt_trace_try -fsanitize=thread -mllvm -tsan-instrument-func-entry-exit=0)
    endif()
    set(CMAKE_TRY_COMPILE_TARGET_TYPE STATIC_LIBRARY) # compile only: no TSan runtime needed
    set(CMAKE_REQUIRED_FLAGS "${_pt_trace_try}")
    string(REPLACE ";" " " CMAKE_REQUIRED_FLAGS "${CMAKE_REQUIRED_FLAGS}")
    check_cxx_source_compiles("int f(int *p) { return *p; }" PT_HAVE_TSAN_INSTRUMENTATION)
    unset(CMAKE_REQUIRED_FLAGS)
    unset(CMAKE_TRY_COMPILE_TARGET_TYPE)
    if(PT_HAVE_TSAN_INSTRUMENTATION)
      # -g1 (line tables) where the build has no -g: a report names the kernel's source line
      set(_pt_trace_opts ${_pt_trace_try} -DPT_EMU_TRACED=1
          "$<$<NOT:$<OR:$<CONFIG:Debug>,$<CONFIG:RelWithDebInfo>>>:-g1>")
      if(PT_SANITIZE)
        list(PREPEND _pt_trace_opts -fno-sanitize=address)
      endif()
      message(STATUS "punctum: emulation access checks ON (-fsanitize=thread instrumentation)")
    else()
      message(WARNING "punctum: the C++ compiler cannot instrument for TSan: emulation access checks OFF")
    endif()
  endif()
  if(PT_SANITIZE AND CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
    # GCC 12 miscompiles UBSan's null check of a TLS address (a `je` after an `lea`, on stale
    # flags) and reports threadIdx & co. as null at random: keep every check but that one.
    set(_pt_kernel_tu_opts -fno-sanitize=null)
  else()
    set(_pt_kernel_tu_opts "")
  endif()
  if(_pt_trace_opts AND NOT PT_SANITIZE)
    list(APPEND _pt_kernel_tu_opts ${_pt_trace_opts})
  endif()
  if(_pt_kernel_tu_opts)
    set_source_files_properties(${CMAKE_SOURCE_DIR}/tests/emu/emu_backend.cpp PROPERTIES
      COMPILE_OPTIONS "${_pt_kernel_tu_opts}")
  endif()

  add_executable(punctum-emu ${CMAKE_SOURCE_DIR}/src/cli/main.c)
  target_link_libraries(punctum-emu PRIVATE punctum_core_emu)

  # op-by-op comparison: the emulated cuda backend against the cpu backend
  add_executable(test_backend_ops_emu ${CMAKE_SOURCE_DIR}/tests/emu/test_backend_ops.c)
  target_link_libraries(test_backend_ops_emu PRIVATE punctum_core_emu)
  add_test(NAME cuda_emu_backend_ops COMMAND test_backend_ops_emu WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
  set_tests_properties(cuda_emu_backend_ops PROPERTIES LABELS cuda-emu TIMEOUT 600)
  # the same with the threads of every block run in a random order between barriers: a result
  # that changes reads shared memory no barrier orders (a race on a GPU)
  add_test(NAME cuda_emu_backend_ops_shuffled COMMAND test_backend_ops_emu --seed 7
           WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
  set_tests_properties(cuda_emu_backend_ops_shuffled PROPERTIES LABELS cuda-emu TIMEOUT 600
                       ENVIRONMENT PUNCTUM_EMU_SCHEDULE=shuffle)

  # the emulation layer itself: barriers, shuffles, indices, cuBLAS / cuBLASLt conventions, and a
  # deliberately broken kernel for each of its checks
  add_executable(test_emu_selftest ${CMAKE_SOURCE_DIR}/tests/emu/test_emu_selftest.cpp
                                   ${CMAKE_SOURCE_DIR}/tests/emu/test_emu_checks.cpp)
  target_include_directories(test_emu_selftest PRIVATE ${CMAKE_SOURCE_DIR}/kernels ${CMAKE_SOURCE_DIR}/tests/emu)
  target_include_directories(test_emu_selftest SYSTEM PRIVATE ${PT_CUDA_INCLUDE_DIR})
  target_compile_definitions(test_emu_selftest PRIVATE PT_CUDA_EMU)
  target_link_libraries(test_emu_selftest PRIVATE punctum_core_emu)
  if(_pt_trace_opts)
    set(_pt_selftest_opts ${_pt_trace_opts})
    if(PT_SANITIZE AND CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
      list(APPEND _pt_selftest_opts -fno-sanitize=null)
    endif()
    set_source_files_properties(${CMAKE_SOURCE_DIR}/tests/emu/test_emu_selftest.cpp
      ${CMAKE_SOURCE_DIR}/tests/emu/test_emu_checks.cpp PROPERTIES COMPILE_OPTIONS "${_pt_selftest_opts}")
  endif()
  add_test(NAME cuda_emu_selftest COMMAND test_emu_selftest)
  set_tests_properties(cuda_emu_selftest PROPERTIES LABELS cuda-emu TIMEOUT 120)

  # an emulated test program from one source in tests/emu, traced like the self-test
  function(pt_emu_test target source test)
    add_executable(${target} ${CMAKE_SOURCE_DIR}/tests/emu/${source})
    target_include_directories(${target} PRIVATE ${CMAKE_SOURCE_DIR}/kernels ${CMAKE_SOURCE_DIR}/tests/emu)
    target_include_directories(${target} SYSTEM PRIVATE ${PT_CUDA_INCLUDE_DIR})
    target_compile_definitions(${target} PRIVATE PT_CUDA_EMU)
    target_link_libraries(${target} PRIVATE punctum_core_emu)
    if(_pt_trace_opts)
      set_source_files_properties(${CMAKE_SOURCE_DIR}/tests/emu/${source} PROPERTIES
        COMPILE_OPTIONS "${_pt_selftest_opts}")
    endif()
    add_test(NAME ${test} COMMAND ${target})
  endfunction()

  # kernels/pt_cuda.h's ldmatrix / cp.async / mma.sync wrappers against naive references: the
  # same source runs on a GPU as test_wrappers_cuda
  pt_emu_test(test_wrappers_emu test_wrappers_emu.cpp cuda_emu_wrappers)
  set_tests_properties(cuda_emu_wrappers PROPERTIES LABELS cuda-emu TIMEOUT 60)

  # the roofline counting (PUNCTUM_EMU_ROOFLINE, benchmarks/roofline.py) on hand-checked cases
  pt_emu_test(test_emu_roofline test_emu_roofline.cpp cuda_emu_roofline)
  set_tests_properties(cuda_emu_roofline PROPERTIES LABELS cuda-emu TIMEOUT 60 SKIP_RETURN_CODE 77)

  # end to end: punctum-emu --backend cuda vs punctum --backend cpu on tiny random models
  if(_pt_py)
    add_test(NAME cuda_emu_e2e
      COMMAND ${_pt_py} ${CMAKE_SOURCE_DIR}/tests/emu/e2e.py
              --punctum $<TARGET_FILE:punctum> --other $<TARGET_FILE:punctum-emu>
              --work ${CMAKE_BINARY_DIR}/cuda-emu-e2e
      WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
    set_tests_properties(cuda_emu_e2e PROPERTIES LABELS cuda-emu TIMEOUT 900 SKIP_RETURN_CODE 77)
  endif()
elseif(PT_CUDA_EMU)
  message(STATUS "punctum: punctum-emu OFF (no CUDA headers found)")
else()
  message(STATUS "punctum: punctum-emu OFF (PT_CUDA_EMU=OFF)")
endif()

# ---- GPU tests (real backend; skipped where no GPU is usable) -----------------------------------
if(PT_HAVE_REAL_CUDA)
  add_executable(test_backend_ops_cuda ${CMAKE_SOURCE_DIR}/tests/emu/test_backend_ops.c)
  target_link_libraries(test_backend_ops_cuda PRIVATE punctum_core)
  add_test(NAME cuda_backend_ops COMMAND test_backend_ops_cuda --skip-without-gpu WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
  set_tests_properties(cuda_backend_ops PROPERTIES LABELS gpu SKIP_RETURN_CODE 77 TIMEOUT 900)
  # the device wrappers on the real hardware (PTX assembled for every architecture in CI)
  add_executable(test_wrappers_cuda ${CMAKE_SOURCE_DIR}/tests/emu/test_wrappers.cu)
  target_include_directories(test_wrappers_cuda PRIVATE ${CMAKE_SOURCE_DIR}/kernels)
  target_link_libraries(test_wrappers_cuda PRIVATE CUDA::cudart)
  set_target_properties(test_wrappers_cuda PROPERTIES CUDA_ARCHITECTURES "${CMAKE_CUDA_ARCHITECTURES}")
  if(_pt_new_opts)
    set_target_properties(test_wrappers_cuda PROPERTIES COMPILE_OPTIONS "${_pt_new_opts}")
  endif()
  add_test(NAME cuda_wrappers COMMAND test_wrappers_cuda)
  set_tests_properties(cuda_wrappers PROPERTIES LABELS gpu SKIP_RETURN_CODE 77 TIMEOUT 120)
  if(_pt_py)
    add_test(NAME cuda_e2e
      COMMAND ${_pt_py} ${CMAKE_SOURCE_DIR}/tests/emu/e2e.py
              --punctum $<TARGET_FILE:punctum> --other $<TARGET_FILE:punctum> --skip-without-cuda
              --work ${CMAKE_BINARY_DIR}/cuda-e2e
      WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
    set_tests_properties(cuda_e2e PROPERTIES LABELS gpu TIMEOUT 1800 SKIP_RETURN_CODE 77)
  endif()
endif()
