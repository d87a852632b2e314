// finemoe-analyze next's criterion (analysis/next.h): the greedy rank-one updates against a direct
// recomputation (the information matrix of the old and the proposed runs inverted from scratch),
// the budget and the one-pick-per-candidate rule, and the continuous G* against a scan.
// Runtime < 0.1 s.
#include <gtest/gtest.h>

#include <Eigen/Dense>

#include <cmath>
#include <set>

#include "next.h"
#include "synthetic_records.h"

namespace finemoe::analysis {
namespace {

std::vector<Run> poor_grid(const LawCoefficients& truth) {
  std::vector<Run> runs;
  uint64_t n = 0;
  for (const auto& s : {synthetic::Shape{256, 4}, synthetic::Shape{384, 4}}) {
    for (double G : {1.0, 2.0}) {
      for (double D : {4e9, 8e9, 16e9, 32e9}) {
        Run r;
        r.N = double(synthetic::total_params(s, 64));
        r.D = D, r.G = G, r.E = 64;
        r.loss = truth.predict(r.N, D, G) * (1 + 0.01 * synthetic::normal(3, n++));
        runs.push_back(r);
      }
    }
  }
  return runs;
}

TEST(Next, ContinuousOptimalGMatchesAScan) {
  const LawCoefficients law = law_preset("table1").moe;
  const FlopsModel flops;
  const double u = continuous_log2_optimal_G(law, 64, 1.93e20, 64, flops);
  double best = INFINITY, best_u = 0;
  for (double v = 0; v <= 6; v += 1e-3) {
    const double l = optimal_for_granularity(law, 64, std::exp2(v), 1.93e20, flops).loss;
    if (l < best) best = l, best_u = v;
  }
  EXPECT_NEAR(u, best_u, 2e-3);
}

TEST(Next, GreedyUpdatesMatchADirectRecomputation) {
  const LawCoefficients law = law_preset("table1").moe;
  const std::vector<analysis::Run> runs = poor_grid(law);
  NextOptions o;
  o.budget = 2e19;
  o.target = 1.93e20;
  const double rmse = 0.01 * 3;
  const NextProposal p = propose_next_runs(law, 64, runs, rmse, o, [&](const NextCandidate& c) {
    return candidate_flops(c, 64, o.flops);
  });
  ASSERT_FALSE(p.runs.empty());
  EXPECT_LE(int(p.runs.size()), o.max_runs);
  EXPECT_LE(p.spent, o.budget);
  std::set<std::tuple<double, double, double>> seen;
  for (const auto& c : p.runs) EXPECT_TRUE(seen.insert({c.n_blocks, c.G, c.D}).second) << "picked twice";
  // Direct: Sigma = (J^T J / s^2 + P)^-1 over the old and the proposed runs, then sd(log2 G*).
  const std::vector<double> theta = law.values();
  const int n = int(theta.size());
  Eigen::MatrixXd info = Eigen::MatrixXd::Zero(n, n);
  const auto add = [&](double N, double D, double G) {
    const auto row = law_gradient_row(law, N, D, G);
    const Eigen::VectorXd j = Eigen::Map<const Eigen::VectorXd>(row.data(), n);
    info += j * j.transpose() / (rmse * rmse);
  };
  for (const analysis::Run& r : runs) add(r.N, r.D, r.G);
  for (int i = 0; i < n; ++i) info(i, i) += 1 / std::pow(o.prior_scale * (std::abs(theta[std::size_t(i)]) + 0.1), 2);
  Eigen::VectorXd g(n);
  for (int i = 0; i < n; ++i) {
    std::vector<double> up = theta, down = theta;
    const double h = 1e-5 * std::max(std::abs(theta[std::size_t(i)]), 1e-2);
    up[std::size_t(i)] += h, down[std::size_t(i)] -= h;
    g(i) = (continuous_log2_optimal_G(LawCoefficients::from_values(true, up), 64, o.target, o.max_g, o.flops) -
            continuous_log2_optimal_G(LawCoefficients::from_values(true, down), 64, o.target, o.max_g, o.flops)) /
           (2 * h);
  }
  const double sd_before = std::sqrt(g.dot(info.inverse() * g));
  for (const auto& c : p.runs) {
    const double d = 64 * c.n_blocks;  // the paper's shape rule, the default of d_per_block
    EXPECT_EQ(c.d_model, d);
    add(d * d * (8 * 64 + 4) * c.n_blocks, c.D, c.G);
  }
  const double sd_after = std::sqrt(g.dot(info.inverse() * g));
  EXPECT_NEAR(p.sd_log2_G_before, sd_before, 1e-6 * sd_before);
  EXPECT_NEAR(p.sd_log2_G_after, sd_after, 1e-6 * sd_before);
  EXPECT_LT(p.sd_log2_G_after, p.sd_log2_G_before);
}

}  // namespace
}  // namespace finemoe::analysis
