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

// The 10th-90th percentile bands are meant to hold the truth about 80% of the time for each
// coefficient; across several noise draws the coverage must be near that (bands that are too
// narrow, e.g. resampling without replacement, fail). Run at 0.2% noise: at the 1% the
// paper-like grid (D over a factor of 8 only) does not identify c against b / D^beta, and the
// least-squares estimate itself lies far from the truth (see OnePercentNoiseHeldOutAndKFold).
TEST_F(FitTest, BootstrapBandsHoldTheTruth) {
  int inside = 0, total = 0;
  const int draws = 4;
  for (int seed = 1; seed <= draws; ++seed) {
    const std::string dir = dir_ + "/draw" + std::to_string(seed);
    fs::create_directories(dir);
    const std::vector<analysis::Run> runs = synthetic::write_grid(dir, kTruth, 0.002, uint64_t(seed));
    FitOptions o = quick(FitPreset::paper);
    o.bootstrap = 30;
    o.seed = uint64_t(seed);
    const FitResult fit = fit_law(runs, o);
    ASSERT_EQ(fit.bands.size(), 7u);
    const auto truth = kTruth.values();
    const auto names = kTruth.names();
    for (std::size_t i = 0; i < truth.size(); ++i) {
      const bool in = fit.bands[i].p10 <= truth[i] && truth[i] <= fit.bands[i].p90;
      inside += in;
      ++total;
      if (seed == 1) {
        std::printf("  %-5s truth %8.4f band [%8.4f, %8.4f]%s\n", names[i].c_str(), truth[i], fit.bands[i].p10,
                    fit.bands[i].p90, in ? "" : "  (outside)");
      }
    }
  }
  std::printf("coverage of the true coefficients by the 10-90 bands: %d of %d\n", inside, total);
  EXPECT_GE(double(inside) / total, 0.65);
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
