// The all-to-all dispatcher across ranks: every copy reaches its expert's owner, grouped per local
// expert, and comes back unchanged (permute -> all-to-all -> unpermute is the identity).
#include <gtest/gtest.h>

#include <vector>

#include "model/moe/dispatcher.h"
#include "parallel/process_grid.h"

namespace finemoe {
namespace {

TEST(MoeDispatcherMpi, RowsReachTheirExpertsAndComeBack) {
  MpiCommunicator world(MPI_COMM_WORLD);
  const int W = world.size();
  for (int ep = 1; ep <= W; ep *= 2) {
    ProcessGrid grid(MPI_COMM_WORLD, ep);
    const int ne = 4 * ep, n_local = 4, me = grid.rank();
    // Rank r sends token t to expert (t * (r + 1)) % ne; some experts get nothing from some ranks.
    const int tokens = 5 + me, width = 3;
    std::vector<double> x(tokens * width);
    for (int t = 0; t < tokens; ++t)
      for (int i = 0; i < width; ++i) x[t * width + i] = 1000.0 * me + 10.0 * t + i;
    std::vector<int64_t> per_expert(ne, 0);
    std::vector<int32_t> rows;
    for (int e = 0; e < ne; ++e)
      for (int t = 0; t < tokens; ++t)
        if ((t * (me + 1)) % ne == e) {
          rows.push_back(t);
          ++per_expert[e];
        }
    moe::AllToAllDispatcher<double> dispatcher(&grid.expert_group(), ne);
    dispatcher.plan(per_expert);
    const int64_t n = int64_t(rows.size());
    std::vector<double> send(n * width), recv(dispatcher.received_rows() * width), back(n * width);
    moe::gather_rows(x.data(), rows.data(), n, width, send.data());
    dispatcher.to_experts(send.data(), recv.data(), width);

    // What this rank should receive, expert-major then source rank then token order.
    std::vector<double> want;
    const int group_first_rank = grid.rank() - grid.ep_rank();
    for (int j = 0; j < n_local; ++j) {
      const int e = grid.ep_rank() * n_local + j;
      int64_t count = 0;
      for (int src = group_first_rank; src < group_first_rank + ep; ++src)
        for (int t = 0; t < 5 + src; ++t)
          if ((t * (src + 1)) % ne == e) {
            for (int i = 0; i < width; ++i) want.push_back(1000.0 * src + 10.0 * t + i);
            ++count;
          }
      EXPECT_EQ(dispatcher.received_per_local_expert()[j], count) << "ep " << ep << " expert " << e;
    }
    EXPECT_EQ(recv, want) << "ep " << ep;

    dispatcher.from_experts(recv.data(), back.data(), width);
    EXPECT_EQ(back, send) << "ep " << ep;
    std::vector<double> y(tokens * width, 0.0), ones(n, 1.0);
    moe::combine_rows(back.data(), rows.data(), ones.data(), n, width, y.data());
    EXPECT_EQ(y, x) << "ep " << ep;
    if (ep > 1) {
      EXPECT_GT(dispatcher.exchange_stats().bytes, 0);
    }
  }
}

}  // namespace
}  // namespace finemoe
