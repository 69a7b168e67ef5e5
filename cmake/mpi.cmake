# punctum — MPI ranks (SPEC §4 "Under mpirun"), included by CMakeLists.txt after the
# punctum_core target exists:   include(cmake/mpi.cmake)
#
#   MPI found (and PT_MPI=ON, the default)   punctum_core is compiled with PT_HAVE_MPI and linked
#                                            against MPI::MPI_C: under `mpirun -np N` each rank
#                                            takes a block of the input (io/job.c).
#   not found                                a plain build; a run that finds itself started by
#                                            mpirun with N > 1 processes refuses (exit 2)
#                                            instead of running N identical sweeps.
option(PT_MPI "Build with MPI (mpirun -np N punctum run ...) when an MPI library is found" ON)

if(PT_MPI)
  find_package(MPI COMPONENTS C QUIET)
  if(MPI_C_FOUND)
    target_link_libraries(punctum_core PUBLIC MPI::MPI_C)
    target_compile_definitions(punctum_core PUBLIC PT_HAVE_MPI=1)
    message(STATUS "MPI ${MPI_C_VERSION}: found (mpirun -np N punctum run: one rank per block of records)")
  else()
    message(STATUS "MPI: not found; punctum is built without MPI (mpirun -np N >1 is refused)")
  endif()
else()
  message(STATUS "MPI: disabled (PT_MPI=OFF)")
endif()
