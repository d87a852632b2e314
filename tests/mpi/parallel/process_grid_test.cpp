// The process grid's groups and the communicator's collectives, checked against what each rank
// can compute on its own from the rank numbers.
#include <gtest/gtest.h>

#include <numeric>

#include "parallel/process_grid.h"

namespace finemoe {
namespace {

int world_size() {
  int n = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &n);
  return n;
}

TEST(ProcessGrid, GroupsFollowRankLayoutForEveryEpSize) {
  const int W = world_size();
  for (int ep = 1; ep <= W; ++ep) {
    if (W % ep) continue;
    ProcessGrid grid(MPI_COMM_WORLD, ep);
    const int r = grid.rank();
    EXPECT_EQ(grid.ep_size(), ep);
    EXPECT_EQ(grid.dp_size(), W / ep);
    EXPECT_EQ(grid.ep_rank(), r % ep);
    EXPECT_EQ(grid.dp_rank(), r / ep);
    // Members of my expert group are the consecutive ranks [r/ep*ep, r/ep*ep + ep).
    std::vector<int32_t> members(static_cast<size_t>(ep));
    int32_t mine = r;
    grid.expert_group().all_gather(&mine, members.data(), 1, DType::i32);
    for (int i = 0; i < ep; ++i) EXPECT_EQ(members[size_t(i)], r / ep * ep + i);
    std::vector<int32_t> replicas(static_cast<size_t>(W / ep));
    grid.data_group().all_gather(&mine, replicas.data(), 1, DType::i32);
    for (int i = 0; i < W / ep; ++i) EXPECT_EQ(replicas[size_t(i)], r % ep + i * ep);
    EXPECT_GE(grid.local_size(), 1);
    EXPECT_GE(grid.default_threads(), 1);
  }
}

TEST(Communicator, AllToAllVDeliversEachBlockToItsRank) {
  ProcessGrid grid(MPI_COMM_WORLD, world_size());
  Communicator& c = grid.world();
  const int P = c.size(), r = c.rank();
  // Rank r sends (r + d + 1) values to rank d, each encoding (source, destination, index).
  std::vector<int64_t> send_counts(static_cast<size_t>(P)), recv_counts(static_cast<size_t>(P));
  std::vector<double> send;
  for (int d = 0; d < P; ++d) {
    send_counts[size_t(d)] = r + d + 1;
    recv_counts[size_t(d)] = d + r + 1;
    for (int i = 0; i < r + d + 1; ++i) send.push_back(1000.0 * r + 10.0 * d + i);
  }
  std::vector<double> recv(size_t(std::accumulate(recv_counts.begin(), recv_counts.end(), int64_t(0))));
  c.all_to_all_v(send.data(), send_counts, recv.data(), recv_counts, DType::f64);
  size_t k = 0;
  for (int s = 0; s < P; ++s)
    for (int i = 0; i < s + r + 1; ++i) EXPECT_EQ(recv[k++], 1000.0 * s + 10.0 * r + i);
}

TEST(Communicator, NonBlockingSumEqualsClosedForm) {
  ProcessGrid grid(MPI_COMM_WORLD, 1);
  Communicator& c = grid.world();
  const int P = c.size();
  std::vector<float> x(1000);
  for (size_t i = 0; i < x.size(); ++i) x[i] = float(c.rank() + 1) * float(i);
  auto pending = c.start_all_reduce_sum(x.data(), x.size(), DType::f32);
  pending->wait();
  for (size_t i = 0; i < x.size(); ++i) EXPECT_EQ(x[i], float(P * (P + 1) / 2) * float(i));
  EXPECT_EQ(c.max(c.rank()), P - 1);
  EXPECT_EQ(c.sum(int64_t(1)), P);
}

}  // namespace
}  // namespace finemoe
