// The fit reaches its optimum and says when the runs do not identify the law (issue 17).
//  - Reference costs: on the first demo's 36 records, a 20-run snapshot, and today's demo designs
//    C (36 runs) and D (45 runs, smoothed training loss) (tests/unit/analysis/data),
//    finemoe's objective at its fit is at most 1.001 times the lowest cost an independent
//    optimiser found (scripts/reference-fit.py: SciPy L-BFGS-B from 400 random starts, run
//    offline, its output committed as data/reference_costs.csv). The cost is recomputed here
//    from the fitted coefficients with this file's own Huber sum.
//  - A degenerate point: records whose loss does not depend on N or G. The slopes in ln a and
//    alpha vanish there, so a small gradient proves nothing; the fit must reach the truth's cost
//    and flag the terms as vanishing.
//  - Each identifiability flag on synthetic records, and none on a well-designed grid.
// Runtime: about 40 s on 2 quiet cores (most of it the bootstrap of the identified grid).
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "fit.h"
#include "runs.h"
#include "scaling_law.h"
#include "synthetic_records.h"

namespace finemoe::analysis {
namespace {

const std::string kData = FINEMOE_ANALYSIS_TEST_DATA;

std::vector<std::string> split(const std::string& line) {
  std::vector<std::string> out;
  std::stringstream ss(line);
  std::string item;
  while (std::getline(ss, item, ',')) out.push_back(item);
  return out;
}

// law,run,N,D,G,loss lines; E = 8 for MoE runs as in the demo.
std::map<std::string, std::vector<analysis::Run>> read_runs(const std::string& file) {
  std::ifstream in(kData + "/" + file);
  EXPECT_TRUE(in) << kData + "/" + file;
  std::map<std::string, std::vector<analysis::Run>> out;
  std::string line;
  bool header = true;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    if (header) {
      header = false;
      continue;
    }
    const auto f = split(line);
    analysis::Run r;
    r.moe = f[0] == "moe";
    r.path = f[1];
    r.N = std::stod(f[2]);
    r.D = std::stod(f[3]);
    r.G = std::stod(f[4]);
    r.loss = std::stod(f[5]);
    r.E = r.moe ? 8 : 0;
    out[f[0]].push_back(r);
  }
  return out;
}

// docs/analysis.md: 1/2 sum huber(r), huber(r) = r^2 (|r| <= 0.1), 0.2 |r| - 0.01 beyond.
double huber_cost(const LawCoefficients& k, const std::vector<analysis::Run>& runs) {
  double sum = 0;
  for (const analysis::Run& r : runs) {
    const double res = k.predict(r.N, r.D, r.G) - r.loss, a = std::abs(res);
    sum += a <= 0.1 ? res * res : 0.2 * a - 0.01;
  }
  return 0.5 * sum;
}

FitOptions no_resampling() {
  FitOptions o;
  o.bootstrap = 0;
  o.kfold = 0;
  o.threads = 2;
  return o;
}

TEST(FitReference, CostAtMostTheIndependentOptimisersTimes1001) {
  std::ifstream in(kData + "/reference_costs.csv");
  ASSERT_TRUE(in);
  std::string line;
  int checked = 0;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#' || line.rfind("file,", 0) == 0) continue;
    const auto f = split(line);
    const std::string file = f[0], law = f[1];
    const double reference = std::stod(f[3]);
    const std::vector<analysis::Run> runs = read_runs(file).at(law);
    ASSERT_EQ(runs.size(), std::size_t(std::stoi(f[2]))) << file << " " << law;
    const FitResult fit = fit_law(runs, no_resampling());
    const double cost = huber_cost(fit.coefficients, runs);
    std::printf("%s %s (%zu runs): cost %.10g, reference %.10g, ratio %.6f; projected gradient %.2e; %s: %s\n",
                file.c_str(), law.c_str(), runs.size(), cost, reference, cost / reference,
                fit.diagnostics.projected_gradient, fit.diagnostics.optimizer.c_str(),
                fit.diagnostics.termination.c_str());
    EXPECT_LE(cost, 1.001 * reference) << file << " " << law;
    EXPECT_NEAR(fit.diagnostics.cost, cost, 1e-9 * cost) << "the reported cost is not the documented objective";
    EXPECT_LT(fit.diagnostics.projected_gradient, 1e-5) << file << " " << law;
    ++checked;
  }
  EXPECT_EQ(checked, 7);  // the first demo's MoE and dense, the snapshot's MoE, both designs of today's demo
}

// Bootstrap fits start from several points, so a term that vanished in the full fit can come
// back in a resample: the demo's dense law (a/N^alpha vanishes) once had zero-width bands.
TEST(FitReference, NoBootstrapBandOfZeroWidthOnTheDemosDenseRuns) {
  const std::vector<analysis::Run> runs = read_runs("demo_runs.csv").at("dense");
  FitOptions o = no_resampling();
  o.bootstrap = 100;
  const FitResult fit = fit_law(runs, o);
  ASSERT_EQ(fit.bands.size(), 5u);
  const auto names = fit.coefficients.names();
  for (std::size_t i = 0; i + 1 < names.size(); ++i) {  // c sits on its bound: [0, 0] is flagged as at_bound
    EXPECT_GT(fit.bands[i].p90 - fit.bands[i].p10, 1e-6 * std::abs(fit.coefficients.values()[i])) << names[i];
  }
  ASSERT_EQ(fit.bootstrap_diagnostics.size(), 100u);
  for (const auto& d : fit.bootstrap_diagnostics) EXPECT_FALSE(d.termination.empty());
  EXPECT_FALSE(fit.identified());
}

bool has_flag(const FitResult& fit, const std::string& kind, const std::string& subject) {
  for (const auto& f : fit.flags) {
    if (f.kind == kind && f.subject == subject) return true;
  }
  return false;
}

std::string flags_of(const FitResult& fit) {
  std::string s;
  for (const auto& f : fit.flags) s += f.kind + ":" + f.subject + "; ";
  return s;
}

// Loss = 1.5 + 20 / D^0.2 (1 + 0.5% noise): nothing depends on N or G.
TEST(FitReference, DegeneratePointReachesTheTruthsCostAndFlagsTheVanishingTerms) {
  std::vector<analysis::Run> runs;
  int index = 0;
  for (const auto& s : synthetic::paper_shapes()) {
    for (int64_t G : synthetic::paper_granularities()) {
      for (double D : synthetic::wide_token_budgets()) {
        analysis::Run r;
        r.N = double(synthetic::total_params(s, 64));
        r.D = D;
        r.G = double(G);
        r.E = 64;
        r.loss = (1.5 + 20 / std::pow(D, 0.2)) * (1 + 0.005 * synthetic::normal(5, uint64_t(index++)));
        r.path = "flat" + std::to_string(index);
        runs.push_back(r);
      }
    }
  }
  FitOptions o = no_resampling();
  o.bootstrap = 20;
  const FitResult fit = fit_law(runs, o);
  LawCoefficients truth = LawCoefficients::from_values(true, {1e-30, 0.1, 20, 0.2, 1e-30, 0.5, 1.5});
  const double cost = huber_cost(fit.coefficients, runs), truth_cost = huber_cost(truth, runs);
  std::printf("degenerate: cost %.6e, truth's %.6e; projected gradient %.2e; flags %s\n", cost, truth_cost,
              fit.diagnostics.projected_gradient, flags_of(fit).c_str());
  EXPECT_LE(cost, truth_cost);
  EXPECT_TRUE(has_flag(fit, "vanishing_term", "a/N^alpha")) << flags_of(fit);
  EXPECT_TRUE(has_flag(fit, "vanishing_term", "g/(G^gamma N^alpha)")) << flags_of(fit);
  EXPECT_FALSE(fit.identified());
}

// The paper's law on 6 shapes x 5 G x tokens 2B-1T (a factor of 512) at 0.5% noise: identified.
// (At 1% noise over 8B-512B, c's band reaches its bound 0 and is rightly flagged: bench_fit_coverage.)
TEST(FitReference, AWellDesignedGridRaisesNoFlag) {
  const std::vector<analysis::Run> runs =
      synthetic::make_grid(law_preset("table1").moe, 0.005, 1, {2e9, 16e9, 128e9, 1024e9});
  FitOptions o = no_resampling();
  o.bootstrap = 100;
  const FitResult fit = fit_law(runs, o);
  EXPECT_TRUE(fit.identified()) << flags_of(fit);
}

// c below 0 in truth (losses stay positive): the fit sits on c >= 0 and says so.
TEST(FitReference, CBelowItsBoundIsFlaggedAtBound) {
  LawCoefficients law = law_preset("table1").moe;
  law.c = -0.5;
  const std::vector<analysis::Run> runs = synthetic::make_grid(law, 0.002, 3, synthetic::wide_token_budgets());
  const FitResult fit = fit_law(runs, no_resampling());
  EXPECT_TRUE(fit.c_at_bound);
  EXPECT_TRUE(has_flag(fit, "at_bound", "c")) << flags_of(fit);
}

// The flag rules themselves, on hand-made results.
FitResult made_up(double holdout_rel_rmse) {
  FitResult f;
  f.coefficients = law_preset("table1").moe;
  f.rmse = 0.01;
  f.holdout_rel_rmse = holdout_rel_rmse;
  for (double v : f.coefficients.values()) f.bands.push_back({0.9 * v, 1.1 * v});
  return f;
}

TEST(FitReference, FlagRules) {
  const std::vector<analysis::Run> runs = synthetic::make_grid(law_preset("table1").moe, 0.0, 1, synthetic::wide_token_budgets());
  EXPECT_TRUE(identifiability_flags(made_up(0.01), runs).empty());

  FitResult degenerate = made_up(0.01);
  degenerate.bands[1] = {0.115, 0.115};  // alpha
  auto flags = identifiability_flags(degenerate, runs);
  ASSERT_EQ(flags.size(), 1u);
  EXPECT_EQ(flags[0].kind, "degenerate_band");
  EXPECT_EQ(flags[0].subject, "alpha");
  EXPECT_NE(flags[0].remedy.find("wider N"), std::string::npos) << flags[0].remedy;

  FitResult wide = made_up(0.01);
  wide.bands[4] = {0.05, 2.1};  // g: 1.6 orders of magnitude
  wide.bands[3] = {-0.01, 0.2};  // beta: changes sign
  flags = identifiability_flags(wide, runs);
  ASSERT_EQ(flags.size(), 2u);
  EXPECT_EQ(flags[0].subject, "beta");
  EXPECT_NE(flags[0].remedy.find("wider D"), std::string::npos);
  EXPECT_EQ(flags[1].subject, "g");
  EXPECT_EQ(flags[1].kind, "wide_band");
  EXPECT_NE(flags[1].remedy.find("more G"), std::string::npos);

  FitResult held = made_up(0.035);
  flags = identifiability_flags(held, runs);
  ASSERT_EQ(flags.size(), 1u);
  EXPECT_EQ(flags[0].kind, "large_holdout_error");

  FitResult noisy = made_up(0.01);
  noisy.rmse = 1.0;  // every term varies by less than this over the grid
  flags = identifiability_flags(noisy, runs);
  ASSERT_EQ(flags.size(), 3u);
  for (const auto& f : flags) EXPECT_EQ(f.kind, "vanishing_term");
}

}  // namespace
}  // namespace finemoe::analysis
