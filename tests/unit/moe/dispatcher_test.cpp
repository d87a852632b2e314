// Dispatcher on one process (no communicator): the same code path with a trivial exchange.
#include <gtest/gtest.h>

#include <vector>

#include "model/moe/dispatcher.h"
#include "moe_test_support.h"

namespace finemoe {
namespace {

TEST(MoeDispatcher, PermuteExchangeUnpermuteIsTheIdentity) {
  const int tokens = 10, width = 3, ne = 4;
  const auto x = test::random_values<double>(tokens * width, 5);
  // One copy per token, to expert t % ne, listed in send order (expert-major).
  std::vector<int32_t> rows;
  std::vector<int64_t> per_expert(ne, 0);
  for (int e = 0; e < ne; ++e)
    for (int t = 0; t < tokens; ++t)
      if (t % ne == e) {
        rows.push_back(t);
        ++per_expert[e];
      }
  moe::AllToAllDispatcher<double> dispatcher(nullptr, ne);
  dispatcher.plan(per_expert);
  ASSERT_EQ(dispatcher.sent_rows(), tokens);
  ASSERT_EQ(dispatcher.received_rows(), tokens);
  EXPECT_EQ(dispatcher.received_per_local_expert(), per_expert);
  std::vector<double> send(tokens * width), at_experts(tokens * width), back(tokens * width);
  moe::gather_rows(x.data(), rows.data(), tokens, width, send.data());
  dispatcher.to_experts(send.data(), at_experts.data(), width);
  EXPECT_EQ(at_experts, send);  // one rank: send order is expert order
  dispatcher.from_experts(at_experts.data(), back.data(), width);
  std::vector<double> y(tokens * width, 0.0), ones(tokens, 1.0);
  moe::combine_rows(back.data(), rows.data(), ones.data(), tokens, width, y.data());
  EXPECT_EQ(y, x);
}

TEST(MoeDispatcher, CombineWeightsCopiesAndItsBackwardIsTheAdjoint) {
  const int tokens = 3, width = 2, copies = 5;
  const std::vector<int32_t> rows = {0, 2, 0, 1, 2};
  const auto back = test::random_values<double>(copies * width, 8);
  const auto gate = test::random_values<double>(copies, 9);
  const auto dy = test::random_values<double>(tokens * width, 10);
  std::vector<double> y(tokens * width, 0.0);
  moe::combine_rows(back.data(), rows.data(), gate.data(), copies, width, y.data());
  for (int t = 0; t < tokens; ++t)
    for (int i = 0; i < width; ++i) {
      double want = 0;
      for (int c = 0; c < copies; ++c)
        if (rows[c] == t) want += gate[c] * back[c * width + i];
      EXPECT_DOUBLE_EQ(y[t * width + i], want);
    }
  std::vector<double> dback(copies * width), dgate(copies);
  moe::combine_rows_backward(dy.data(), back.data(), rows.data(), gate.data(), copies, width, dback.data(),
                             dgate.data());
  // <dy, combine(back, gate)> is bilinear: its derivatives are dback and dgate.
  double lhs = 0, via_back = 0, via_gate = 0;
  for (int i = 0; i < tokens * width; ++i) lhs += dy[i] * y[i];
  for (int i = 0; i < copies * width; ++i) via_back += dback[i] * back[i];
  for (int c = 0; c < copies; ++c) via_gate += dgate[c] * gate[c];
  EXPECT_NEAR(lhs, via_back, 1e-14);
  EXPECT_NEAR(lhs, via_gate, 1e-14);
  // gather's adjoint: <gather(x), z> = <x, scatter_add(z)>.
  const auto x = test::random_values<double>(tokens * width, 11);
  std::vector<double> gathered(copies * width), scattered(tokens * width, 0.0);
  moe::gather_rows(x.data(), rows.data(), copies, width, gathered.data());
  moe::scatter_add_rows(dback.data(), rows.data(), copies, width, scattered.data());
  double a = 0, b = 0;
  for (int i = 0; i < copies * width; ++i) a += gathered[i] * dback[i];
  for (int i = 0; i < tokens * width; ++i) b += x[i] * scattered[i];
  EXPECT_NEAR(a, b, 1e-14);
}

}  // namespace
}  // namespace finemoe
