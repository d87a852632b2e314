// Fitting the scaling law to synthetic run records written with the trainer's RunRecordWriter:
// exact recovery without noise, calibrated bootstrap bands, held-out accuracy with 1% noise,
// robustness to outliers and clear errors. The 1000-record timing is bench_fit_1000.cpp.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "fit.h"
#include "io/run_record.h"
#include "runs.h"
#include "synthetic_records.h"
#include "util/check.h"

namespace finemoe::analysis {
namespace {

namespace fs = std::filesystem;
using synthetic::Shape;

class FitTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = (fs::temp_directory_path() / ("finemoe_fit_" + std::to_string(getpid()) + "_" +
                                         ::testing::UnitTest::GetInstance()->current_test_info()->name()))
               .string();
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string dir_;
};

const LawCoefficients kTruth = law_preset("table1").moe;

FitOptions quick(FitPreset preset) {
  FitOptions o;
  o.preset = preset;
  o.bootstrap = 0;
  o.kfold = 0;
  o.threads = 2;
  return o;
}

void expect_recovered(const LawCoefficients& got, const LawCoefficients& want, double tolerance) {
  const auto names = want.names();
  const auto g = got.values(), w = want.values();
  for (std::size_t i = 0; i < w.size(); ++i) {
    EXPECT_NEAR(g[i] / w[i], 1.0, tolerance) << names[i] << ": got " << g[i] << ", truth " << w[i];
  }
}

class NoiseFreeRecovery : public FitTest, public ::testing::WithParamInterface<FitPreset> {};

TEST_P(NoiseFreeRecovery, EveryCoefficientWithinOnePercent) {
  const std::vector<analysis::Run> runs = synthetic::write_grid(dir_, kTruth, 0.0, 1);
  ASSERT_EQ(runs.size(), 120u);  // 6 shapes x 5 G x 4 token budgets
  const FitResult fit = fit_law(runs, quick(GetParam()));
  const auto v = fit.coefficients.values();
  std::printf("%s preset: a %.4f alpha %.5f b %.4f beta %.5f g %.4f gamma %.5f c %.5f, RMSE %.2e\n",
              to_string(GetParam()).c_str(), v[0], v[1], v[2], v[3], v[4], v[5], v[6], fit.rmse);
  expect_recovered(fit.coefficients, kTruth, 0.01);
  EXPECT_LT(fit.rmse, 1e-6);
  EXPECT_EQ(fit.E, 64);
}

INSTANTIATE_TEST_SUITE_P(Presets, NoiseFreeRecovery, ::testing::Values(FitPreset::paper, FitPreset::chinchilla),
                         [](const auto& param_info) { return to_string(param_info.param); });

TEST_F(FitTest, DenseLawIsRecoveredFromDenseRecords) {
  const LawCoefficients dense = law_preset("table1").dense;
  const std::vector<analysis::Run> runs = synthetic::write_grid(dir_, dense, 0.0, 1);
  ASSERT_EQ(runs.size(), 24u);
  ASSERT_FALSE(runs[0].moe);
  const FitResult fit = fit_law(runs, quick(FitPreset::paper));
  EXPECT_FALSE(fit.coefficients.moe);
  expect_recovered(fit.coefficients, dense, 0.01);
}

double sse(const LawCoefficients& law, const std::vector<analysis::Run>& runs) {
  double sum = 0;
  for (const auto& r : runs) sum += std::pow(law.predict(r.N, r.D, r.G) - r.loss, 2);
  return sum;
}

// Issue 7: "with 1% noise the known coefficients lie inside the bootstrap 10th-90th percentile
// bands and held-out runs are predicted within 2%", on the paper-like grid of 6 shapes x 5 G x 4
// token budgets, with the default method (paper preset, 100 resamples of 80% of the runs).
//
// The grid's token budgets are 8B, 32B, 128B, 512B (a factor of 64). With the paper's own
// 16B-130B (a factor of 8) the term b / D^beta is nearly a constant over the grid and c is not
// identified at 1% noise: measured over 20 noise seeds (bench_fit_coverage, docs/analysis.md),
// the fitted c sits on its bound 0 in most draws, b and beta are dragged along the ridge and
// their bands hold the truth in 11 of 20 draws (all coefficients: 95 of 140); with the wider
// budgets every coefficient is covered in 15-18 of 20 draws (116 of 140).
//
// The statistic. A 10-90 band holds the truth with probability about 0.8 even for a perfectly
// calibrated method, so one draw cannot show calibration: the test fits kDraws = 10 independent
// noise draws and counts, per coefficient, the draws whose band holds the truth.
//  - Each coefficient must be covered in at least 5 of the 10 draws. For a calibrated method
//    P(Binomial(10, 0.8) <= 4) = 0.6% per coefficient (at most 4.3% for any of the 7); a band
//    that holds the truth half the time or less fails with probability >= 38%, one that misses
//    it systematically (e.g. the paper's weight decay, 0 of 10 for a, alpha, b, beta, c) fails.
//  - All coefficients together must be covered in at least 47 of the 70 (draw, coefficient)
//    pairs: the expected count is 56 for a calibrated method, P(Binomial(70, 0.8) <= 46) = 0.4%;
//    the narrow grid's 68% coverage expects 47.6 and fails about 40% of the time.
// The held-out part: every draw's 24 lowest-loss runs, fitted without them, are predicted with
// a relative RMSE under 2% (single runs miss by up to 2.5 x the 1% noise, by chance).
TEST_F(FitTest, OnePercentNoiseBandsHoldTheTrueCoefficients) {
  constexpr int kDraws = 10;
  const auto truth = kTruth.values();
  const auto names = kTruth.names();
  std::vector<int> covered(truth.size(), 0);
  double worst_holdout = 0;
  for (int draw = 1; draw <= kDraws; ++draw) {
    const std::string dir = dir_ + "/draw" + std::to_string(draw);
    fs::create_directories(dir);
    const std::vector<analysis::Run> runs =
        synthetic::write_grid(dir, kTruth, 0.01, uint64_t(draw), synthetic::wide_token_budgets());
    ASSERT_EQ(runs.size(), 120u);
    FitOptions o;  // the defaults: paper preset, 100 bootstrap resamples of 80% of the runs
    o.kfold = 0;
    o.threads = 2;
    o.seed = uint64_t(draw);
    const FitResult fit = fit_law(runs, o);
    ASSERT_EQ(fit.bands.size(), 7u);
    ASSERT_GE(fit.bootstrap.size(), 95u);
    std::printf("draw %2d:", draw);
    for (std::size_t i = 0; i < truth.size(); ++i) {
      const bool in = fit.bands[i].p10 <= truth[i] && truth[i] <= fit.bands[i].p90;
      covered[i] += in;
      std::printf(" %s [%.3g, %.3g]%s", names[i].c_str(), fit.bands[i].p10, fit.bands[i].p90, in ? "" : "(out)");
    }
    std::printf("; held out %.2f%%\n", 100 * fit.holdout_rel_rmse);
    EXPECT_EQ(fit.holdout_runs, 24u);
    EXPECT_LT(fit.holdout_rel_rmse, 0.02) << "draw " << draw;
    worst_holdout = std::max(worst_holdout, fit.holdout_rel_rmse);
  }
  int total = 0;
  for (std::size_t i = 0; i < truth.size(); ++i) {
    std::printf("  %-5s (truth %g) inside the 10-90 band in %d of %d draws\n", names[i].c_str(), truth[i],
                covered[i], kDraws);
    EXPECT_GE(covered[i], 5) << names[i] << " is inside its band in only " << covered[i] << " of " << kDraws
                             << " draws";
    total += covered[i];
  }
  std::printf("  all: %d of %d (expected about 80%%); worst held-out relative RMSE %.2f%%\n", total,
              kDraws * int(truth.size()), 100 * worst_holdout);
  EXPECT_GE(total, 47);
}

TEST_F(FitTest, OnePercentNoiseHeldOutAndKFold) {
  const std::vector<analysis::Run> runs = synthetic::write_grid(dir_, kTruth, 0.01, 7);
  FitOptions o = quick(FitPreset::paper);
  o.kfold = 5;
  const FitResult fit = fit_law(runs, o);
  std::printf("RMSE %.4f, held out (%zu runs) RMSE %.4f = %.2f%% (max %.2f%%), 5-fold RMSE %.4f\n", fit.rmse,
              fit.holdout_runs, fit.holdout_rmse, 100 * fit.holdout_rel_rmse, 100 * fit.holdout_max_rel_error,
              fit.kfold_rmse);
  EXPECT_EQ(fit.holdout_runs, 24u);
  // The fit reaches the least-squares minimum: no worse than the true coefficients on the data.
  EXPECT_LE(sse(fit.coefficients, runs), sse(kTruth, runs));
  EXPECT_LT(fit.holdout_rel_rmse, 0.02);
  // 1% noise on losses of about 3: the in-sample RMSE is about the noise, out-of-sample a bit more.
  EXPECT_GT(fit.rmse, 0.015);
  EXPECT_LT(fit.rmse, 0.045);
  EXPECT_GT(fit.kfold_rmse, fit.rmse);
  EXPECT_LT(fit.kfold_rmse, 1.5 * fit.rmse);
}

TEST_F(FitTest, ThreeOutliersMoveTheHeldOutErrorLittle) {
  std::vector<analysis::Run> runs = synthetic::write_grid(dir_, kTruth, 0.01, 3);
  const FitOptions o = quick(FitPreset::paper);
  const double before = fit_law(runs, o).holdout_rel_rmse;
  for (std::size_t i : {10u, 55u, 100u}) {
    const analysis::Run& r = runs[i];
    const Shape shape{r.d_model, r.n_blocks};
    const std::string path = synthetic::write_record(dir_, "outlier_" + std::to_string(i), shape, r.E, int64_t(r.G),
                                                   r.D, 1.2 * kTruth.predict(r.N, r.D, r.G));
    runs.push_back(load_runs({path}, LossSource::eval).moe.at(0));
  }
  const double after = fit_law(runs, o).holdout_rel_rmse;
  std::printf("held-out relative RMSE %.3f%% without, %.3f%% with 3 outliers (+20%% loss)\n", 100 * before,
              100 * after);
  EXPECT_LT(std::abs(after - before) * 100, 0.5);
}

TEST_F(FitTest, FewerRunsThanCoefficientsIsAClearError) {
  std::vector<analysis::Run> runs = synthetic::write_grid(dir_, kTruth, 0.0, 1);
  runs.resize(6);
  try {
    fit_law(runs, quick(FitPreset::paper));
    FAIL() << "no error";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("6 completed runs and 7 coefficients"), std::string::npos) << e.what();
  }
}

TEST_F(FitTest, NanOrNegativeLossInACompletedRecordIsAClearError) {
  const Shape shape{256, 4};
  for (double bad : {std::nan(""), -1.0}) {
    const std::string path = synthetic::write_record(dir_, bad < 0 ? "negative" : "nan", shape, 64, 2, 16e9, bad);
    try {
      load_runs({path}, LossSource::eval);
      FAIL() << "no error for loss " << bad;
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("eval_loss"), std::string::npos) << e.what();
    }
  }
}

TEST_F(FitTest, RecordsWithDifferentEInOneFitAreAClearError) {
  std::vector<analysis::Run> runs = synthetic::write_grid(dir_, kTruth, 0.0, 1);
  const std::string odd = synthetic::write_record(dir_, "e16", Shape{256, 4}, 16, 2, 16e9, 3.5);
  runs.push_back(load_runs({odd}, LossSource::eval).moe.at(0));
  try {
    fit_law(runs, quick(FitPreset::paper));
    FAIL() << "no error";
  } catch (const InputError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("different E"), std::string::npos) << what;
    EXPECT_NE(what.find(odd), std::string::npos) << what;
    EXPECT_NE(what.find("E=16"), std::string::npos) << what;
  }
}

TEST_F(FitTest, IncompleteFailedAndUnreadableRecordsAreListedWithTheirReason) {
  const Shape shape{256, 4};
  const std::string good = synthetic::write_record(dir_, "good", shape, 64, 2, 16e9, 3.5);
  const std::string dense = synthetic::write_record(dir_, "dense", shape, 0, 1, 16e9, 3.9);
  RunInfo run;
  run.moe_enabled = false;
  ModelInfo m;
  m.N_total = 1000;
  {
    RunRecordWriter w = RunRecordWriter::create(dir_ + "/killed.h5", run, m, false);
    w.append_train({});
  }
  RunRecordWriter::create(dir_ + "/failed.h5", run, m, false).stop(RunStatus::failed, "loss diverged");
  { std::ofstream(dir_ + "/junk.h5") << "junk"; }
  const RunSet set = load_runs(expand_inputs({dir_}), LossSource::smoothed_train);
  ASSERT_EQ(set.moe.size(), 1u);
  ASSERT_EQ(set.dense.size(), 1u);
  EXPECT_EQ(set.moe[0].path, good);
  EXPECT_EQ(set.moe[0].G, 2);
  EXPECT_EQ(set.moe[0].N, double(synthetic::total_params(shape, 64)));
  EXPECT_EQ(set.dense[0].path, dense);
  ASSERT_EQ(set.skipped.size(), 3u);  // sorted by path: failed, junk, killed
  EXPECT_EQ(set.skipped[0].state, "failed");
  EXPECT_NE(set.skipped[0].reason.find("loss diverged"), std::string::npos);
  EXPECT_EQ(set.skipped[1].state, "unreadable");
  EXPECT_EQ(set.skipped[2].state, "incomplete");
  EXPECT_NE(set.skipped[2].reason.find("status running"), std::string::npos);
  EXPECT_THROW(expand_inputs({dir_ + "/nothing_*.h5"}), InputError);
}

}  // namespace
}  // namespace finemoe::analysis
