# ntk::mpi (include/ntk/mpi.hpp) and ntk::scalapack (include/ntk/scalapack.hpp), included from the
# top-level CMakeLists.txt when NTK_MPI is on.  Debian: openmpi-bin libopenmpi-dev
# libscalapack-openmpi-dev.
find_package(MPI REQUIRED COMPONENTS CXX)
add_library(ntk_mpi INTERFACE)
add_library(ntk::mpi ALIAS ntk_mpi)
set_target_properties(ntk_mpi PROPERTIES EXPORT_NAME mpi)
target_link_libraries(ntk_mpi INTERFACE ntk MPI::MPI_CXX)
set(_ntk_mpi_targets ntk_mpi)

find_library(NTK_SCALAPACK_LIBRARY NAMES scalapack-openmpi scalapack
             DOC "ScaLAPACK built for the MPI in use (Debian: libscalapack-openmpi-dev)")
if(NTK_SCALAPACK_LIBRARY)
  add_library(ntk_scalapack INTERFACE)
  add_library(ntk::scalapack ALIAS ntk_scalapack)
  set_target_properties(ntk_scalapack PROPERTIES EXPORT_NAME scalapack)
  target_link_libraries(ntk_scalapack INTERFACE ntk_mpi ${NTK_SCALAPACK_LIBRARY})
  list(APPEND _ntk_mpi_targets ntk_scalapack)
else()
  message(STATUS "ntk: ScaLAPACK not found; ntk::scalapack and its tests are skipped")
endif()

# mpiexec for the tests: --oversubscribe lets 3 ranks run on 2 cores (Open MPI); running as root
# (CI containers) needs Open MPI's explicit consent.
set(NTK_MPIEXEC_PREFLAGS "" CACHE STRING "Extra mpiexec flags for the MPI tests")
if(NOT NTK_MPIEXEC_PREFLAGS)
  execute_process(COMMAND ${MPIEXEC_EXECUTABLE} --version OUTPUT_VARIABLE _ntk_mpiexec_version
                  ERROR_QUIET)
  if(_ntk_mpiexec_version MATCHES "Open MPI|OpenRTE")
    set(NTK_MPIEXEC_PREFLAGS --oversubscribe)
  endif()
endif()

if(NTK_INSTALL)
  install(TARGETS ${_ntk_mpi_targets} EXPORT ntkMpiTargets)
  install(EXPORT ntkMpiTargets NAMESPACE ntk:: DESTINATION ${CMAKE_INSTALL_DATADIR}/cmake/ntk)
  export(EXPORT ntkMpiTargets NAMESPACE ntk:: FILE ${PROJECT_BINARY_DIR}/ntkMpiTargets.cmake)
endif()
