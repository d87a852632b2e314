// The synthetic benchmark of finemoe-analyze next (issue 18; docs/analysis.md, "The next runs to
// make"). Not a ctest case: run build/tests/bench_next [seeds] once and copy the figures.
//
// Truth: Table 1's MoE law (E = 64), losses with 1% relative noise. Start: a deliberately poor
// grid: shapes 64x3M and 64x7M (d_model 256 and 384, 4 blocks), G in {1, 2}, D in {4, 8, 16, 32}B
// (16 runs). Target: 1.93e20 FLOPs (Table 2's 64x1B row). Three rounds, each with a budget of
// 2e19 FLOPs:
//   next:    fit the runs so far, propose with propose_next_runs (at most 12 runs), run them.
//   uniform: the same FLOPs each round as next spent that round, taken in a seeded random order
//            from the full factorial n_blocks {2, 3, 4, 6, 8, 11, 16} x G {1, 4, 16, 64} x
//            D {0.125, 0.5, 2, 8, 32}B, skipping runs that would overspend (each point once).
// Metric, fixed before the first run: per seed, the width p90 - p10 of log2 G* at the target
// over 40 bootstrap fits (all runs resampled, fraction 1) of each final design; the ratio
// width(next) / width(uniform); the median ratio over the seeds (next wins when it is below 1).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "fit.h"
#include "next.h"
#include "synthetic_records.h"
#include "util/rng.h"

using namespace finemoe;
using namespace finemoe::analysis;

namespace {

constexpr double kE = 64, kTarget = 1.93e20, kRoundBudget = 2e19, kNoise = 0.01;

analysis::Run make_run(const LawCoefficients& truth, double n_blocks, double G, double D, uint64_t seed, uint64_t index) {
  analysis::Run r;
  const double d = 64 * n_blocks;
  r.N = d * d * (8 * kE + 4) * n_blocks;
  r.D = D, r.G = G, r.E = int64_t(kE);
  r.d_model = int64_t(d), r.n_blocks = int64_t(n_blocks);
  r.loss = truth.predict(r.N, D, G) * (1 + kNoise * synthetic::normal(seed, index));
  return r;
}

FitOptions fit_options(int bootstrap, uint64_t seed) {
  FitOptions o;
  o.bootstrap = bootstrap;
  o.bootstrap_fraction = 1.0;
  o.kfold = 0;
  o.threads = 2;
  o.seed = seed;
  return o;
}

double band_width(const std::vector<analysis::Run>& runs, uint64_t seed) {
  const FitResult fit = fit_law(runs, fit_options(40, seed));
  std::vector<double> u;
  for (const auto& k : fit.bootstrap) u.push_back(continuous_log2_optimal_G(k, kE, kTarget, 64, FlopsModel{}));
  return percentile(u, 0.9) - percentile(u, 0.1);
}

}  // namespace

int main(int argc, char** argv) {
  const int seeds = argc > 1 ? std::atoi(argv[1]) : 20;
  const int first_seed = argc > 2 ? std::atoi(argv[2]) : 1;
  // Knobs of next (NextOptions) for trying variants: NEXT_MAX_RUNS, NEXT_OVERHEAD, NEXT_LOSS_WEIGHT.
  const auto knob = [](const char* name, double def) { const char* v = std::getenv(name); return v ? std::atof(v) : def; };
  NextOptions base;
  base.max_runs = int(knob("NEXT_MAX_RUNS", base.max_runs));
  base.overhead_fraction = knob("NEXT_OVERHEAD", base.overhead_fraction);
  base.loss_weight = knob("NEXT_LOSS_WEIGHT", base.loss_weight);
  std::printf("# next: max_runs %d, overhead_fraction %g, loss_weight %g; seeds %d..%d\n", base.max_runs,
              base.overhead_fraction, base.loss_weight, first_seed, first_seed + seeds - 1);
  const LawCoefficients truth = law_preset("table1").moe;
  const FlopsModel flops;
  std::vector<double> ratios;
  int wins = 0;
  std::printf("%4s %8s %8s %8s %6s %6s %10s %10s\n", "seed", "w_next", "w_unif", "ratio", "n_next", "n_unif", "F_next",
              "F_unif");
  for (int seed = first_seed; seed < first_seed + seeds; ++seed) {
    uint64_t index = 0;
    std::vector<analysis::Run> start;
    for (double nb : {4.0}) {
      for (double d : {256.0, 384.0}) {
        for (double G : {1.0, 2.0}) {
          for (double D : {4e9, 8e9, 16e9, 32e9}) {
            analysis::Run r = make_run(truth, nb, G, D, uint64_t(seed), index++);
            r.N = d * d * (8 * kE + 4) * nb;  // the two shapes share 4 blocks
            r.d_model = int64_t(d);
            r.loss = truth.predict(r.N, D, G) * (1 + kNoise * synthetic::normal(uint64_t(seed), index++));
            start.push_back(r);
          }
        }
      }
    }
    // The uniform design's order.
    std::vector<NextCandidate> grid;
    for (double nb : {2.0, 3.0, 4.0, 6.0, 8.0, 11.0, 16.0})
      for (double G : {1.0, 4.0, 16.0, 64.0})
        for (double D : {0.125e9, 0.5e9, 2e9, 8e9, 32e9}) grid.push_back({nb, G, D, 64 * nb, 0, 0});
    const uint64_t key = hash_combine(uint64_t(seed), hash_string("uniform-order"));
    std::sort(grid.begin(), grid.end(), [&](const NextCandidate& a, const NextCandidate& b) {
      return hash_combine(key, uint64_t(a.n_blocks * 1e6 + a.G * 1e3 + a.D / 1e8)) <
             hash_combine(key, uint64_t(b.n_blocks * 1e6 + b.G * 1e3 + b.D / 1e8));
    });
    std::vector<bool> used(grid.size(), false);
    std::vector<analysis::Run> next_runs = start, uniform_runs = start;
    double spent_next = 0, spent_uniform = 0;
    for (int round = 0; round < 3; ++round) {
      const FitResult fit = fit_law(next_runs, fit_options(0, uint64_t(seed)));
      NextOptions o = base;
      o.budget = kRoundBudget;
      o.target = kTarget;
      const NextProposal p = propose_next_runs(fit.coefficients, kE, next_runs, fit.rmse, o, [&](const NextCandidate& c) {
        return candidate_flops(c, kE, flops);
      });
      for (const auto& c : p.runs) next_runs.push_back(make_run(truth, c.n_blocks, c.G, c.D, uint64_t(seed), 1000 + index++));
      spent_next += p.spent;
      double left = p.spent;
      for (std::size_t i = 0; i < grid.size(); ++i) {
        const NextCandidate& c = grid[i];
        const double cost = candidate_flops(c, kE, flops);
        if (used[i] || cost > left) continue;
        used[i] = true;
        uniform_runs.push_back(make_run(truth, c.n_blocks, c.G, c.D, uint64_t(seed), 1000 + index++));
        left -= cost;
        spent_uniform += cost;
      }
    }
    const double w_next = band_width(next_runs, uint64_t(seed)), w_uniform = band_width(uniform_runs, uint64_t(seed));
    const double ratio = w_uniform > 0 ? w_next / w_uniform : (w_next > 0 ? INFINITY : 1);
    ratios.push_back(ratio);
    wins += ratio < 1;
    std::printf("%4d %8.4f %8.4f %8.3f %6zu %6zu %10.3g %10.3g\n", seed, w_next, w_uniform, ratio, next_runs.size(),
                uniform_runs.size(), spent_next, spent_uniform);
    std::fflush(stdout);
  }
  std::printf("median ratio of the log2 G* band widths (next / uniform) over %d seeds: %.3f; next narrower in %d\n", seeds,
              percentile(ratios, 0.5), wins);
  return 0;
}
