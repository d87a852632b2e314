// The watchdog's bookkeeping and its quiet side: phases are numbered and timed, and phases whose
// collectives complete within the limit never trigger a report, however many there are. (The
// report itself ends the job with MPI_Abort; tests/integration/train/ checks it from outside.)
#include <gtest/gtest.h>
#include <mpi.h>

#include <chrono>
#include <thread>

#include "parallel/mpi_communicator.h"
#include "parallel/watchdog.h"

namespace finemoe {
namespace {

TEST(Watchdog, PhasesAreNumberedAndTimed) {
  MpiCommunicator world(MPI_COMM_WORLD);
  Watchdog wd(MPI_COMM_WORLD, 60);
  ASSERT_EQ(wd.enabled(), world.size() > 1);
  if (!wd.enabled()) return;
  int provided = 0;
  MPI_Query_thread(&provided);
  EXPECT_EQ(provided, MPI_THREAD_MULTIPLE) << "the watchdog needs MPI_THREAD_MULTIPLE to ask the other ranks";
  EXPECT_EQ(wd.status().seq, 0);
  EXPECT_FALSE(wd.status().inside);
  {
    const auto p = wd.phase("step 1: forward");
    const Watchdog::Status s = wd.status();
    EXPECT_EQ(s.seq, 1);
    EXPECT_TRUE(s.inside);
    EXPECT_EQ(s.name, "step 1: forward");
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    EXPECT_GE(wd.status().seconds, 0.015);
  }
  EXPECT_FALSE(wd.status().inside);
  EXPECT_EQ(wd.status().name, "step 1: forward");
  { const auto p = wd.phase("step 1: checkpoint"); }
  EXPECT_EQ(wd.status().seq, 2);
}

TEST(Watchdog, CompletingPhasesNeverReport) {
  MpiCommunicator world(MPI_COMM_WORLD);
  Watchdog wd(MPI_COMM_WORLD, 1.0);
  // 30 phases of about 0.1 s, each ending in collectives; rank 0 arrives late in every one but
  // within the limit. A report would abort the test run.
  for (int i = 0; i < 30; ++i) {
    const auto p = wd.phase("phase " + std::to_string(i));
    if (world.rank() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    EXPECT_EQ(world.sum(int64_t(1)), world.size());
    world.barrier();
  }
  // Between phases nothing is timed: a long pause outside a phase is fine.
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  world.barrier();
}

TEST(Watchdog, DisabledByZero) {
  Watchdog wd(MPI_COMM_WORLD, 0);
  EXPECT_FALSE(wd.enabled());
  const auto p = wd.phase("anything");
  EXPECT_EQ(wd.status().seq, 0);
}

}  // namespace
}  // namespace finemoe
