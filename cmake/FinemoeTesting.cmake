# Test helpers.
#   finemoe_unit_test(NAME SOURCES ... LIBS ...): a GoogleTest binary, cases discovered by ctest.
#   finemoe_mpi_test(NAME RANKS N [N...] SOURCES ... LIBS ...): a GoogleTest binary run under
#     mpiexec with each listed rank count (CMake 3.25 has no TEST_LAUNCHER, so add_test per count).
# Environment of every test: root may run mpiexec, one thread per process unless a test asks.
set(FINEMOE_MPIEXEC_ENV OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
    OMPI_MCA_rmaps_base_oversubscribe=1 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
    OMP_WAIT_POLICY=passive)

function(finemoe_unit_test name)
  cmake_parse_arguments(T "" "TIMEOUT" "SOURCES;LIBS" ${ARGN})
  add_executable(${name} ${T_SOURCES})
  target_link_libraries(${name} PRIVATE ${T_LIBS} GTest::gtest GTest::gtest_main finemoe_warnings)
  set_target_properties(${name} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 300)
  endif()
  # gtest_discover_tests (CMake 3.25) splits a multi-variable ENVIRONMENT property into separate
  # arguments, keeping only the first variable; `env VAR=... binary` as the executor keeps them all.
  set_target_properties(${name} PROPERTIES CROSSCOMPILING_EMULATOR "env;${FINEMOE_MPIEXEC_ENV}")
  gtest_discover_tests(${name} DISCOVERY_TIMEOUT 60 PROPERTIES TIMEOUT ${T_TIMEOUT} LABELS unit)
endfunction()

function(finemoe_mpi_test name)
  cmake_parse_arguments(T "" "TIMEOUT" "SOURCES;LIBS;RANKS" ${ARGN})
  add_executable(${name} ${T_SOURCES})
  target_link_libraries(${name} PRIVATE ${T_LIBS} GTest::gtest finemoe_warnings MPI::MPI_CXX)
  set_target_properties(${name} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 600)
  endif()
  foreach(np IN LISTS T_RANKS)
    add_test(NAME ${name}.np${np}
      COMMAND ${MPIEXEC_EXECUTABLE} ${MPIEXEC_NUMPROC_FLAG} ${np} --oversubscribe ${MPIEXEC_PREFLAGS}
              $<TARGET_FILE:${name}> ${MPIEXEC_POSTFLAGS})
    set_tests_properties(${name}.np${np} PROPERTIES TIMEOUT ${T_TIMEOUT} LABELS "mpi"
      ENVIRONMENT "${FINEMOE_MPIEXEC_ENV}" PROCESSORS ${np})
  endforeach()
endfunction()
