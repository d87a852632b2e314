// Compute-optimal configurations: the paper's Table 2 from its Table 1 coefficients, the "20x at
// 1e20 FLOPs" dense comparison, Brent's method, and budgets too small for any model.
#include <gtest/gtest.h>

#include <cmath>

#include "optimal.h"
#include "scaling_law.h"
#include "util/check.h"

namespace finemoe::analysis {
namespace {

struct Table2Row {
  double flops, N_active, D, G, loss;
};
// paper-facts.md, Table 2 (E = 64); N_active from the "64 x N" labels.
const Table2Row kTable2[] = {{2.95e18, 100e6, 4.37e9, 8, 3.133},      {1.93e20, 1e9, 28.94e9, 16, 2.491},
                             {1.41e21, 3e9, 72.90e9, 16, 2.245},      {6.46e21, 7e9, 137.60e9, 32, 2.076},
                             {4.16e23, 70e9, 941.07e9, 32, 1.694},    {5.69e24, 300e9, 2.96e12, 64, 1.503},
                             {4.97e25, 1e12, 7.94e12, 64, 1.367}};

TEST(Optimal, ReproducesTable2FromTable1Coefficients) {
  const LawPreset preset = law_preset("table1");
  const FlopsModel flops;  // c_f = 6, c_r = 14
  for (const auto& row : kTable2) {
    const OptimalConfig c = optimal_config(preset.moe, preset.E, powers_of_two(256), row.flops, flops);
    EXPECT_EQ(c.G, row.G) << "budget " << row.flops;
    EXPECT_NEAR(c.N_active / row.N_active, 1.0, 0.05) << "budget " << row.flops;
    EXPECT_NEAR(c.D / row.D, 1.0, 0.05) << "budget " << row.flops;
    // Rounded coefficients give losses 0.01-0.03 below the paper's (paper-facts.md).
    EXPECT_LT(c.loss, row.loss);
    EXPECT_GT(c.loss, row.loss - 0.03);
    // The budget is spent exactly: F = FLOPs per token x D, with d_model = 64 n_blocks.
    EXPECT_NEAR(flops.flops_per_token(c.n_blocks, 64, c.G) * c.D / row.flops, 1.0, 1e-12);
    EXPECT_NEAR(c.d_model, 64 * c.n_blocks, 1e-9);
    std::printf("budget %.3g: G %g (paper %g), N_active %.4g (paper %.4g), D %.4g (paper %.4g), loss %.4f (%.3f)\n",
                row.flops, c.G, row.G, c.N_active, row.N_active, c.D, row.D, c.loss, row.loss);
  }
}

TEST(Optimal, EachGranularityIsAMinimumOverModelSize) {
  const LawPreset preset = law_preset("table1");
  const FlopsModel flops;
  const double budget = 1e21;
  const OptimalRow row = optimal_row(preset.moe, 64, powers_of_two(64), budget, flops, {});
  ASSERT_EQ(row.per_G.size(), 7u);
  for (const OptimalConfig& c : row.per_G) {
    EXPECT_LE(row.best.loss, c.loss);
    // Neighbouring model sizes on the same budget do worse.
    for (double factor : {0.97, 1.03}) {
      const double n = c.n_blocks * factor;
      const double N = std::pow(64 * n, 2) * (8 * 64 + 4) * n;
      const double D = budget / flops.flops_per_token(n, 64, c.G);
      EXPECT_GT(preset.moe.predict(N, D, c.G), c.loss);
    }
  }
}

TEST(Optimal, CompareGivesAboutTwentyTimesAt1e20) {
  const LawPreset preset = law_preset("table1");
  const CompareRow row = compare_row(preset.moe, preset.dense, 64, powers_of_two(256), 1e20, FlopsModel{});
  std::printf("1e20 FLOPs: MoE G %g loss %.4f, dense loss %.4f, dense needs %.4g FLOPs: %.2fx\n", row.moe.G,
              row.moe.loss, row.dense.loss, row.dense_equivalent_flops, row.multiplier);
  EXPECT_GT(row.multiplier, 17.0);
  EXPECT_LT(row.multiplier, 23.0);
  // The dense optimum at the equivalent compute reaches the MoE's loss.
  const OptimalConfig dense = optimal_config(preset.dense, 0, {}, row.dense_equivalent_flops, FlopsModel{});
  EXPECT_NEAR(dense.loss, row.moe.loss, 1e-9);
  // A loss below the dense law's irreducible term is out of its reach.
  EXPECT_TRUE(std::isinf(dense_compute_for_loss(preset.dense, preset.dense.c, FlopsModel{})));
}

TEST(Optimal, BudgetTooSmallForAnyModelIsAClearError) {
  const LawPreset preset = law_preset("table1");
  try {
    optimal_config(preset.moe, 64, powers_of_two(256), 1e10, FlopsModel{});
    FAIL() << "no error";
  } catch (const InputError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("budget 1e+10 FLOPs is too small"), std::string::npos) << what;
    EXPECT_NE(what.find("n_blocks = 1"), std::string::npos) << what;
  }
  // Just above the smallest model's cost, only the cheapest granularities are considered.
  const FlopsModel flops;
  const double smallest = flops.flops_per_token(1, 64, 1) * flops.min_tokens;
  const OptimalRow row = optimal_row(preset.moe, 64, powers_of_two(256), smallest * 1.01, flops, {});
  EXPECT_FALSE(row.per_G.empty());
  EXPECT_LT(row.per_G.size(), 9u);
}

TEST(Optimal, PresetsAndUnknownPreset) {
  EXPECT_EQ(law_preset("table8").E, 16);
  EXPECT_DOUBLE_EQ(law_preset("table8").moe.gamma, 0.986);
  EXPECT_THROW(law_preset("table3"), InputError);
}

TEST(Brent, FindsTheMinimumOfKnownFunctions) {
  EXPECT_NEAR(brent_minimize([](double x) { return (x - 1.234) * (x - 1.234); }, -5, 5, 1e-12), 1.234, 1e-8);
  EXPECT_NEAR(brent_minimize([](double x) { return std::cosh(x - 0.5) + 0.1 * x; }, -3, 4, 1e-12),
              0.5 + std::asinh(-0.1), 1e-8);
  // A minimum at the end of the interval.
  EXPECT_NEAR(brent_minimize([](double x) { return x; }, 2, 3, 1e-10), 2, 1e-8);
}

}  // namespace
}  // namespace finemoe::analysis
