// Calibration of the bootstrap bands (issue 17): 100 independent 1%-noise draws of the paper's
// dense law (Table 1) on 6 shapes x 4 token budgets (8B-512B), each fitted with 100 bootstrap
// resamples of all the runs (fraction 1). A calibrated 10-90 band holds the true coefficient in
// 80% of draws; the test asks for 70-90 of the 100 per coefficient (for a calibrated method
// P(Binomial(100, 0.8) outside [70, 90]) = 1.5% per coefficient), and no band of zero width (c on
// its bound in every resample, 12 of the 500 bands before, now gets the profile band, flagged).
// The dense law keeps it inside CI's budget; the MoE law's calibration is bench_fit_coverage.
// Measured: a 78, alpha 74, b 75, beta 76, c 82 of 100 (72 before c's profile band), 0 bands of zero
// width, 12 draws with c's band from the profile. Runtime: 112 s on 2 shared cores (71 s CPU).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>

#include "fit.h"
#include "synthetic_records.h"

namespace finemoe::analysis {
namespace {

TEST(FitCoverage, HundredDrawsOfTheDenseLawCoverEachCoefficientSeventyToNinetyTimes) {
  constexpr int kDraws = 100;
  const LawCoefficients truth = law_preset("table1").dense;
  const auto t = truth.values();
  const auto names = truth.names();
  std::vector<int> covered(t.size(), 0);
  int zero_width = 0, profile_bands = 0;
  for (int draw = 1; draw <= kDraws; ++draw) {
    const std::vector<analysis::Run> runs = synthetic::make_grid(truth, 0.01, uint64_t(1000 + draw), synthetic::wide_token_budgets());
    FitOptions o;
    o.bootstrap = 100;
    o.bootstrap_fraction = 1.0;
    o.kfold = 0;
    o.threads = 2;
    o.seed = uint64_t(draw);
    const FitResult fit = fit_law(runs, o);
    ASSERT_EQ(fit.bands.size(), t.size());
    for (std::size_t i = 0; i < t.size(); ++i) {
      covered[i] += fit.bands[i].p10 <= t[i] && t[i] <= fit.bands[i].p90;
      zero_width += !(fit.bands[i].p90 > fit.bands[i].p10);
    }
    if (fit.c_band_from_profile) {
      ++profile_bands;
      const bool flagged = std::any_of(fit.flags.begin(), fit.flags.end(), [](const IdentifiabilityFlag& f) {
        return f.subject == "c" && f.kind == "at_bound";
      });
      EXPECT_TRUE(flagged) << "draw " << draw << ": c's band comes from the profile but c is not flagged";
    }
  }
  for (std::size_t i = 0; i < t.size(); ++i) {
    std::printf("  %-5s (truth %g) inside the 10-90 band in %d of %d draws\n", names[i].c_str(), t[i], covered[i], kDraws);
    EXPECT_GE(covered[i], 70) << names[i];
    EXPECT_LE(covered[i], 90) << names[i];
  }
  std::printf("  bands of zero width: %d; c's band from the profile (c on its bound): %d draws\n", zero_width,
              profile_bands);
  EXPECT_EQ(zero_width, 0);
}

}  // namespace
}  // namespace finemoe::analysis
