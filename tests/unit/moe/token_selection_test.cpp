// Token selection invariants: capacities, tie-breaking, drop order, dropless.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <vector>

#include "backend/cpu/token_selection.h"
#include "moe_test_support.h"

namespace finemoe {
namespace {

using moe::ExpertAssignment;

// Softmax-like rows: positive, summing to one.
std::vector<double> random_probs(int tokens, int experts, uint64_t key) {
  auto v = test::random_values<double>(int64_t(tokens) * experts, key);
  for (int t = 0; t < tokens; ++t) {
    double s = 0;
    for (int e = 0; e < experts; ++e) s += (v[t * experts + e] = std::exp(3 * v[t * experts + e]));
    for (int e = 0; e < experts; ++e) v[t * experts + e] /= s;
  }
  return v;
}

TEST(MoeSelection, ExpertChoiceGivesEveryExpertExactlyItsCapacity) {
  for (double cf : {1.0, 0.5, 2.0}) {
    const int E = 4, G = 2, ne = E * G, gs = 16;
    moe::ExpertChoiceSelector<double> sel(ne, G, cf);
    const int cap = sel.capacity(gs);
    EXPECT_EQ(cap, int(gs * G / double(ne) * cf)) << "cf " << cf;
    const auto p = random_probs(gs, ne, 7);
    std::vector<ExpertAssignment> kept;
    std::vector<int> requested;
    sel.select({p.data(), ne, gs}, kept, requested);
    std::vector<int> per_expert(ne, 0);
    std::map<std::pair<int, int>, int> seen;
    for (const auto& a : kept) {
      ++per_expert[a.expert];
      EXPECT_EQ(++seen[std::make_pair(a.token, a.expert)], 1) << "pair selected twice";
    }
    for (int e = 0; e < ne; ++e) EXPECT_EQ(per_expert[e], cap) << "expert " << e;
    // The chosen tokens are each expert's highest scores.
    for (const auto& a : kept) {
      int higher = 0;
      for (int i = 0; i < gs; ++i) higher += p[i * ne + a.expert] > p[a.token * ne + a.expert];
      EXPECT_LT(higher, cap);
    }
  }
}

TEST(MoeSelection, ExpertChoiceBreaksTiesByLowestTokenIndex) {
  const int ne = 2, gs = 6;
  std::vector<double> p(gs * ne, 0.5);  // every score equal
  moe::ExpertChoiceSelector<double> sel(ne, 1, 1.0);
  std::vector<ExpertAssignment> kept;
  std::vector<int> requested;
  sel.select({p.data(), ne, gs}, kept, requested);
  ASSERT_EQ(sel.capacity(gs), 3);
  for (const auto& a : kept) EXPECT_LT(a.token, 3) << "expert " << a.expert;
}

TEST(MoeSelection, TokenChoiceRespectsCapacityAndDropsInPositionOrder) {
  const int ne = 4, gs = 8, k = 1;
  // Every token prefers expert 0 (later tokens even more strongly): capacity 2 keeps tokens 0, 1.
  std::vector<double> p(gs * ne);
  for (int i = 0; i < gs; ++i) {
    p[i * ne] = 0.5 + 0.05 * i;
    for (int e = 1; e < ne; ++e) p[i * ne + e] = (1 - p[i * ne]) / (ne - 1);
  }
  moe::TokenChoiceSelector<double> sel(ne, k, 1.0);
  ASSERT_EQ(sel.capacity(gs), 2);
  std::vector<ExpertAssignment> kept;
  std::vector<int> requested;
  sel.select({p.data(), ne, gs}, kept, requested);
  ASSERT_EQ(kept.size(), 2u);
  EXPECT_EQ(kept[0].token, 0);
  EXPECT_EQ(kept[1].token, 1);
  EXPECT_EQ(requested[0], gs);
}

TEST(MoeSelection, TokenChoiceTopKWithCapacity) {
  const int ne = 8, gs = 16, k = 2;
  const auto p = random_probs(gs, ne, 11);
  moe::TokenChoiceSelector<double> sel(ne, k, 1.0);
  const int cap = sel.capacity(gs);
  EXPECT_EQ(cap, 4);  // ceil(1.0 * 16 * 2 / 8)
  std::vector<ExpertAssignment> kept;
  std::vector<int> requested;
  sel.select({p.data(), ne, gs}, kept, requested);
  std::vector<int> load(ne, 0), total(ne, 0);
  for (const auto& a : kept) ++load[a.expert];
  int requests = 0;
  for (int e = 0; e < ne; ++e) {
    EXPECT_LE(load[e], cap);
    requests += requested[e];
  }
  EXPECT_EQ(requests, gs * k);
  // A pair is dropped exactly when `cap` earlier tokens already hold the expert.
  for (int i = 0; i < gs; ++i) {
    std::vector<int> order(ne);
    for (int e = 0; e < ne; ++e) order[e] = e;
    std::sort(order.begin(), order.end(), [&](int a, int b) { return p[i * ne + a] > p[i * ne + b]; });
    for (int c = 0; c < k; ++c) {
      const int e = order[c];
      const bool was_kept = std::count_if(kept.begin(), kept.end(),
                                          [&](const ExpertAssignment& a) { return a.token == i && a.expert == e; });
      EXPECT_EQ(was_kept, total[e] < cap) << "token " << i << " expert " << e;
      total[e] += was_kept;
    }
  }
}

TEST(MoeSelection, TokenChoiceDroplessProcessesEveryAssignment) {
  const int ne = 4, gs = 16, k = 3;
  std::vector<double> p(gs * ne);
  for (int i = 0; i < gs; ++i)
    for (int e = 0; e < ne; ++e) p[i * ne + e] = e == 0 ? 0.7 : 0.1;  // all pile onto expert 0
  moe::TokenChoiceSelector<double> sel(ne, k, 0.0);
  std::vector<ExpertAssignment> kept;
  std::vector<int> requested;
  sel.select({p.data(), ne, gs}, kept, requested);
  EXPECT_EQ(kept.size(), size_t(gs * k));
  int to_zero = 0;
  for (const auto& a : kept) to_zero += a.expert == 0;
  EXPECT_EQ(to_zero, gs);
  // Ties among experts 1..3 go to the lowest indices: 1 and 2.
  for (const auto& a : kept) EXPECT_NE(a.expert, 3);
}

TEST(MoeSelection, StridedGroupReadsTheRightRows) {
  // A group whose tokens are every third row (positions of different sequences).
  const int ne = 2, gs = 4, stride_rows = 3;
  std::vector<double> p(gs * stride_rows * ne, 0.0);
  for (int i = 0; i < gs; ++i) {
    p[i * stride_rows * ne] = 0.1 * (i + 1);  // expert 0 prefers later tokens
    p[i * stride_rows * ne + 1] = 1 - 0.1 * (i + 1);
  }
  moe::ExpertChoiceSelector<double> sel(ne, 1, 1.0);
  std::vector<ExpertAssignment> kept;
  std::vector<int> requested;
  sel.select({p.data(), int64_t(stride_rows) * ne, gs}, kept, requested);
  std::vector<int> of_zero;
  for (const auto& a : kept)
    if (a.expert == 0) of_zero.push_back(a.token);
  std::sort(of_zero.begin(), of_zero.end());
  EXPECT_EQ(of_zero, (std::vector<int>{2, 3}));
}

// Issue 19: a capacity factor too large for an int kept the capacity of factor 1 (an
// out-of-range cast); any factor above E / top_k must mean "no drops": capacity = group size.
TEST(MoeSelection, HugeCapacityFactorMeansNoDrops) {
  const int gs = 64;
  for (const double cf : {8.0, 1e9, 1e10, 1e300, HUGE_VAL}) {
    SCOPED_TRACE(cf);
    EXPECT_EQ(moe::TokenChoiceSelector<double>(8, 1, cf).capacity(gs), gs);
  }
  EXPECT_EQ(moe::TokenChoiceSelector<double>(8, 1, 1.0).capacity(gs), 8);
  EXPECT_EQ(moe::ExpertChoiceSelector<double>(8, 2, 1e10).capacity(gs), gs);
}

}  // namespace
}  // namespace finemoe
