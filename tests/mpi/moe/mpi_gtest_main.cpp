// GoogleTest under mpiexec: every rank runs every test (they are collective), rank 0 prints the
// full report, the others only their failures; the exit code is the worst over the ranks.
#include <gtest/gtest.h>

#include "parallel/mpi_communicator.h"
#include "parallel/process_grid.h"

int main(int argc, char** argv) {
  finemoe::MpiSession mpi(&argc, &argv);
  int failed = 0;
  {
    finemoe::MpiCommunicator world(MPI_COMM_WORLD);
    if (world.rank() != 0) GTEST_FLAG_SET(brief, true);  // before InitGoogleTest picks the printer
    ::testing::InitGoogleTest(&argc, argv);
    failed = world.max(RUN_ALL_TESTS() != 0 ? 1 : 0);
  }
  return failed;
}
