// Calibration of the fit on synthetic sweeps: for several noise seeds, fits the paper-like grid
// (6 shapes x 5 G x 4 token budgets, Table 1 coefficients, relative Gaussian noise) and counts
// how often each true coefficient lies inside the bootstrap 10th-90th percentile band. The
// numbers behind docs/analysis.md ("Uncertainty"); not a ctest case.
//   bench_fit_coverage [--seeds N] [--noise 0.01] [--budgets 16e9,33e9,66e9,130e9]
//                      [--weight-decay 0] [--fraction 0.8] [--levels 2] [--refit 2] [--grid-starts 6]
//                      [--bootstrap 100] [--threads 2]
//   bench_fit_coverage --write DIR [--noise 0.01] [--budgets ...]: writes seed 1's MoE grid and
//                      the dense grid as run records (to look at finemoe-analyze's output) and exits.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include "fit.h"
#include "synthetic_records.h"

using namespace finemoe::analysis;

int main(int argc, char** argv) {
  int seeds = 10;
  double noise = 0.01;
  std::vector<double> budgets = synthetic::paper_token_budgets();
  FitOptions o;
  o.kfold = 0;
  o.threads = 2;
  std::string write_dir;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string key = argv[i], value = argv[i + 1];
    if (key == "--write") write_dir = value;
    else if (key == "--seeds") seeds = std::atoi(value.c_str());
    else if (key == "--noise") noise = std::atof(value.c_str());
    else if (key == "--weight-decay") o.weight_decay = std::atof(value.c_str());
    else if (key == "--fraction") o.bootstrap_fraction = std::atof(value.c_str());
    else if (key == "--levels") o.start_levels = std::atoi(value.c_str());
    else if (key == "--refit") o.refit_starts = std::atoi(value.c_str());
    else if (key == "--grid-starts") o.refit_grid_starts = std::atoi(value.c_str());
    else if (key == "--bootstrap") o.bootstrap = std::atoi(value.c_str());
    else if (key == "--c-min") o.c_min = std::atof(value.c_str());
    else if (key == "--threads") o.threads = std::atoi(value.c_str());
    else if (key == "--budgets") {
      budgets.clear();
      std::stringstream ss(value);
      std::string item;
      while (std::getline(ss, item, ',')) budgets.push_back(std::atof(item.c_str()));
    } else {
      std::fprintf(stderr, "unknown option %s\n", key.c_str());
      return 2;
    }
  }
  const LawCoefficients truth = law_preset("table1").moe;
  if (!write_dir.empty()) {
    std::filesystem::create_directories(write_dir);
    synthetic::write_grid(write_dir, truth, noise, 1, budgets);
    synthetic::write_grid(write_dir, law_preset("table1").dense, noise, 1, budgets);
    return 0;
  }
  const auto names = truth.names();
  const auto t = truth.values();
  std::vector<int> covered(t.size(), 0);
  std::vector<double> sum_est(t.size(), 0), sum_lo(t.size(), 0), sum_hi(t.size(), 0);
  double sum_holdout = 0, worst_holdout = 0, sse_gap = 0;
  const auto start = std::chrono::steady_clock::now();
  for (int seed = 1; seed <= seeds; ++seed) {
    const std::vector<Run> runs = synthetic::make_grid(truth, noise, uint64_t(seed), budgets);
    o.seed = uint64_t(seed);
    const FitResult fit = fit_law(runs, o);
    const auto v = fit.coefficients.values();
    std::printf("seed %2d:", seed);
    for (std::size_t i = 0; i < t.size(); ++i) {
      const bool in = fit.bands[i].p10 <= t[i] && t[i] <= fit.bands[i].p90;
      covered[i] += in;
      sum_est[i] += v[i];
      sum_lo[i] += fit.bands[i].p10;
      sum_hi[i] += fit.bands[i].p90;
      std::printf(" %s %.4g [%.4g,%.4g]%s", names[i].c_str(), v[i], fit.bands[i].p10, fit.bands[i].p90, in ? "" : "*");
    }
    double sse_fit = 0, sse_true = 0;
    for (std::size_t r = 0; r < runs.size(); ++r) {
      sse_fit += std::pow(fit.predicted[r] - runs[r].loss, 2);
      sse_true += std::pow(truth.predict(runs[r].N, runs[r].D, runs[r].G) - runs[r].loss, 2);
    }
    sse_gap += sse_fit - sse_true;
    sum_holdout += fit.holdout_rel_rmse;
    worst_holdout = std::max(worst_holdout, fit.holdout_max_rel_error);
    std::printf(" | holdout %.2f%% (max %.2f%%), SSE fit - truth %.2e\n", 100 * fit.holdout_rel_rmse,
                100 * fit.holdout_max_rel_error, sse_fit - sse_true);
    std::fflush(stdout);
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("coverage over %d seeds (noise %g, weight decay %g, fraction %g, levels %d, refit %d):\n", seeds, noise,
              o.weight_decay, o.bootstrap_fraction, o.start_levels, o.refit_starts);
  int total = 0;
  for (std::size_t i = 0; i < t.size(); ++i) {
    std::printf("  %-5s truth %8.4g  mean estimate %8.4g  mean band [%8.4g, %8.4g]  covered %d/%d\n", names[i].c_str(),
                t[i], sum_est[i] / seeds, sum_lo[i] / seeds, sum_hi[i] / seeds, covered[i], seeds);
    total += covered[i];
  }
  std::printf("  all: %d/%d; mean held-out relative RMSE %.2f%%, worst held-out error %.2f%%; mean SSE(fit) - "
              "SSE(truth) %.2e; %.1f s\n",
              total, int(t.size()) * seeds, 100 * sum_holdout / seeds, 100 * worst_holdout, sse_gap / seeds, seconds);
  return 0;
}
