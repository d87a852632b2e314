#pragma once
#include <mpi.h>

#include <string>

namespace finemoe {
[[noreturn]] void mpi_fail(int code, const char* call, const char* file, int line);
}

// Every MPI call goes through this: a failure names the call, file and line.
#define MPI_CHECK(call)                                                      \
  do {                                                                       \
    const int finemoe_mpi_rc_ = (call);                                      \
    if (finemoe_mpi_rc_ != MPI_SUCCESS) ::finemoe::mpi_fail(finemoe_mpi_rc_, #call, __FILE__, __LINE__); \
  } while (0)
