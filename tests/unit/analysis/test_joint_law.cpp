// The joint law in E (issue 18): the transform, exact recovery of noise-free synthetic runs of
// several E and G, bootstrap coverage at 1% noise, and the compute-optimal search over E with a
// total-parameter cap checked against an independent scan and the dense optimum of optimal.h.
// Runtime: 44 s alone, 81 s under ctest -j2 (21 s CPU) on 2 shared cores; the coverage test is all but
// 0.3 s of it.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>

#include "joint_fit.h"
#include "joint_optimal.h"
#include "synthetic_records.h"
#include "util/check.h"

namespace finemoe::analysis {
namespace {

// A truth with every term active: the fine-grained Table 1 magnitudes plus E terms of the sign
// the joint paper reports (the N term steeper and the D term smaller at larger E).
JointLaw truth_law(bool fine_grained) {
  if (fine_grained) {
    return JointLaw::from_values(true, {18.1, -0.05, -0.115, -0.004, 30.8, -0.1, -0.147, 0.003, 2.1, 0.58, 0.47});
  }
  return JointLaw::from_values(false, {18.1, -0.05, -0.115, -0.004, 30.8, -0.1, -0.147, 0.003, 0.47});
}

// The paper's six shapes x (dense, E in {4, 16, 64} x G in {1, 4, 16}) x 4 token budgets (8B-512B).
std::vector<JointRun> grid(const JointLaw& law, double noise, uint64_t seed, const std::vector<double>& Es = {4, 16, 64}) {
  std::vector<JointRun> runs;
  uint64_t index = 0;
  for (const auto& s : synthetic::paper_shapes()) {
    std::vector<std::pair<double, double>> eg = {{1, 1}};
    for (double E : Es)
      for (double G : {1.0, 4.0, 16.0}) eg.push_back({E, G});
    for (const auto& [E, G] : eg) {
      for (double D : synthetic::wide_token_budgets()) {
        JointRun r;
        r.path = "synthetic";
        r.N_active = 12.0 * double(s.d_model * s.d_model * s.n_blocks);
        r.D = D, r.E = E, r.G = G;
        r.loss = law.predict(r.N_active, D, E, G) * (1 + noise * synthetic::normal(seed, index++));
        runs.push_back(r);
      }
    }
  }
  return runs;
}

TEST(JointLaw, TransformIsIdentityByDefaultAndSaturatesBetweenItsConstants) {
  const ExpertTransform identity;
  for (double E : {1.0, 3.0, 64.0, 1e4}) EXPECT_NEAR(identity(E), E, 1e-9 * E);
  const ExpertTransform t{2.0, 100.0};
  EXPECT_NEAR(t(1), 2.0, 1e-12);  // Ê(1) = E_start
  EXPECT_LT(t(1e9), 100.0);
  EXPECT_NEAR(t(1e9), 100.0, 1e-3);  // Ê -> E_max
  for (double E = 1; E < 1000; E *= 2) EXPECT_LT(t(E), t(2 * E));  // increasing
}

TEST(JointLaw, ReducesToTheFineGrainedAndDenseLawsWithoutETerms) {
  // delta = gamma = omega = zeta = 0: (a + g G^-kappa) N^alpha + b D^beta + c, i.e. Eq. 9 with
  // alpha, beta written as negative exponents.
  const JointLaw j = JointLaw::from_values(true, {18.1, 0, -0.115, 0, 30.8, 0, -0.147, 0, 2.1, 0.58, 0.47});
  const LawCoefficients k = LawCoefficients::from_values(true, {18.1, 0.115, 30.8, 0.147, 2.1, 0.58, 0.47});
  for (double E : {1.0, 8.0, 64.0}) EXPECT_NEAR(j.predict(1e8, 3e10, E, 8), k.predict(1e8, 3e10, 8), 1e-12);
}

void expect_recovered(const JointLaw& truth) {
  JointFitOptions o;
  o.fine_grained = truth.fine_grained;
  o.bootstrap = 0;
  o.threads = 2;
  const JointFitResult fit = fit_joint_law(grid(truth, 0, 1), o);
  const auto t = truth.values(), v = fit.law.values();
  const auto names = truth.names();
  for (std::size_t i = 0; i < t.size(); ++i) {
    EXPECT_NEAR(v[i], t[i], 1e-6 * std::abs(t[i])) << names[i];
  }
  EXPECT_LT(fit.rmse, 1e-9);
}

TEST(JointFit, RecoversEveryCoefficientOfNoiseFreeRunsOfSeveralEAndG) { expect_recovered(truth_law(true)); }
TEST(JointFit, RecoversThePlainJointLaw) { expect_recovered(truth_law(false)); }

TEST(JointFit, RefusesRunsOfOneExpansionRate) {
  std::vector<JointRun> runs = grid(truth_law(true), 0, 1, {});  // dense only: E = 1
  JointFitOptions o;
  o.bootstrap = 0;
  EXPECT_THROW(fit_joint_law(runs, o), InputError);
}

// 20 draws at 1% noise, 40 bootstrap resamples of all the runs each: a calibrated 10-90 band
// holds the truth in 80% of draws, so each coefficient should be covered 11-20 times
// (P(Binomial(20, 0.8) < 11) = 0.26%). Measured: see the printed counts.
TEST(JointFit, OnePercentNoiseTruthInsideTheBootstrapBands) {
  constexpr int kDraws = 20;
  const JointLaw truth = truth_law(true);
  const auto t = truth.values();
  const auto names = truth.names();
  std::vector<int> covered(t.size(), 0);
  for (int draw = 1; draw <= kDraws; ++draw) {
    JointFitOptions o;
    o.bootstrap = 40;
    o.bootstrap_fraction = 1.0;
    o.threads = 2;
    o.seed = uint64_t(draw);
    const JointFitResult fit = fit_joint_law(grid(truth, 0.01, uint64_t(500 + draw)), o);
    ASSERT_EQ(fit.bands.size(), t.size());
    for (std::size_t i = 0; i < t.size(); ++i) covered[i] += fit.bands[i].p10 <= t[i] && t[i] <= fit.bands[i].p90;
  }
  for (std::size_t i = 0; i < t.size(); ++i) {
    std::printf("  %-6s (truth %g) inside the 10-90 band in %d of %d draws\n", names[i].c_str(), t[i], covered[i], kDraws);
    EXPECT_GE(covered[i], 11) << names[i];
  }
}

TEST(JointOptimal, MatchesAnIndependentScanAndTheDenseOptimum) {
  const JointLaw law = truth_law(true);
  JointSearch s;
  const double budget = 1e20;
  const JointOptimalRow row = joint_optimal_row(law, budget, s);
  ASSERT_TRUE(row.best.feasible);
  // Scan every (E, G) on a fine grid of n_blocks: nothing beats the optimum.
  double scan_best = INFINITY;
  for (double E : s.expansion_rates) {
    for (double G : s.granularities) {
      for (double ln_n = 0; ln_n < 6; ln_n += 1e-3) {
        const double n = std::exp(ln_n), d = 64 * n;
        const double fpt = E > 1 ? s.flops.flops_per_token(n, E, G) : s.flops.flops_per_token(n, 0, 1);
        if (fpt * s.flops.min_tokens > budget) break;
        scan_best = std::min(scan_best, law.predict(12 * d * d * n, budget / fpt, E, E > 1 ? G : 1));
      }
    }
  }
  EXPECT_LE(row.best.loss, scan_best + 1e-9);
  EXPECT_GT(row.best.loss, scan_best - 1e-5);
  // Without E terms and only E = 1 the search is the dense optimum of optimal.h.
  const JointLaw plain = JointLaw::from_values(false, {16.3, 0, -0.126, 0, 26.7, 0, -0.127, 0, 0.47});
  JointSearch dense_only;
  dense_only.expansion_rates = {1};
  const JointOptimalRow d = joint_optimal_row(plain, budget, dense_only);
  const LawCoefficients k = LawCoefficients::from_values(false, {16.3, 0.126, 26.7, 0.127, 0.47});
  const OptimalConfig ref = optimal_for_granularity(k, 0, 1, budget, FlopsModel{});
  EXPECT_NEAR(d.best.loss, ref.loss, 1e-9);
  EXPECT_NEAR(d.best.n_blocks, ref.n_blocks, 1e-4 * ref.n_blocks);
}

TEST(JointOptimal, TotalParameterCapBindsAndIsRespected) {
  const JointLaw law = truth_law(true);
  JointSearch s;
  const double budget = 1e21;
  const JointOptimalRow free = joint_optimal_row(law, budget, s);
  s.max_total_params = free.best.N_total / 4;
  const JointOptimalRow capped = joint_optimal_row(law, budget, s);
  EXPECT_LE(capped.best.N_total, s.max_total_params * (1 + 1e-9));
  EXPECT_GE(capped.best.loss, free.best.loss);
  for (const JointConfig& c : capped.per_E) EXPECT_LE(c.N_total, s.max_total_params * (1 + 1e-9));
  s.max_total_params = 1;  // nothing fits
  EXPECT_THROW(joint_optimal_row(law, budget, s), InputError);
}

}  // namespace
}  // namespace finemoe::analysis
