// A stop signal on one rank reaches every rank through the reduction.
#include <gtest/gtest.h>
#include <mpi.h>

#include <csignal>

#include "parallel/mpi_check.h"
#include "parallel/mpi_communicator.h"
#include "train/stop_signal.h"

namespace finemoe {
namespace {

class StopSignalTest : public ::testing::Test {
 protected:
  void SetUp() override {
    install_stop_signal_handlers();
    clear_stop_request();
  }
  void TearDown() override { clear_stop_request(); }
  MpiCommunicator world{MPI_COMM_WORLD};
};

TEST_F(StopSignalTest, NoSignalNoStop) {
  EXPECT_EQ(stop_signal_received(), 0);
  EXPECT_FALSE(stop_requested_anywhere(world));
}

TEST_F(StopSignalTest, UsrOneOnTheLastRankStopsEveryRank) {
  const int sender = world.size() - 1;
  if (world.rank() == sender) {
    EXPECT_EQ(std::raise(SIGUSR1), 0);
  }
  EXPECT_EQ(stop_signal_received(), world.rank() == sender ? SIGUSR1 : 0);
  EXPECT_TRUE(stop_requested_anywhere(world));
}

TEST_F(StopSignalTest, TermOnRankZeroStopsEveryRankAndTheProcessLives) {
  if (world.rank() == 0) {
    EXPECT_EQ(std::raise(SIGTERM), 0);
  }
  EXPECT_EQ(stop_signal_received(), world.rank() == 0 ? SIGTERM : 0);
  EXPECT_TRUE(stop_requested_anywhere(world));
  clear_stop_request();
  EXPECT_FALSE(stop_requested_anywhere(world));
}

}  // namespace
}  // namespace finemoe
