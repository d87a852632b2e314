#pragma once
// finemoe-analyze plan: the run to make on a real allocation. A fitted law (the fine-grained law
// at one E, or the joint law over E) and the performance model (src/perf, the one behind
// finemoe-bench plan) give the wall-clock-optimal (N, D, G, E, EP, nodes) for a budget of GPU
// hours, beside the FLOPs-optimal choice (the paper's method) and what that choice would cost in
// hours on the same machine (docs/analysis.md, "Hours, not FLOPs").
#include <functional>
#include <string>
#include <vector>

#include "optimal.h"
#include "perf/perf_model.h"

namespace finemoe::analysis {

struct PlanLaw {
  std::string source;      // "preset table1", a fit file, ...
  bool identified = true;  // false: the law's fit raised identifiability flags
  std::vector<double> expansion_rates;  // E searched (one for the fine-grained law; 1 = dense)
  std::vector<double> granularities;
  // Predicted loss of a model: active and total non-embedding parameters, tokens, E, G.
  std::function<double(double N_active, double N_total, double D, double E, double G)> loss;
  // The FLOPs-optimal configuration at a FLOPs budget (Eq. 10, d_model = 64 n_blocks).
  struct FlopsOptimum {
    double E = 0, G = 0, n_blocks = 0, D = 0, loss = 0;
  };
  std::function<FlopsOptimum(double flops)> flops_optimal;
};

struct PlanSearch {
  double context = 256, vocab = 50257;
  double batch_tokens = 524288;  // global tokens per step (the paper's 0.5M)
  int max_blocks = 160;          // n_blocks searched 1..max_blocks (d_model = 64 n_blocks)
  std::vector<int> node_counts = {1, 2, 4, 8, 16, 32, 64};
  FlopsModel flops;
};

struct PlanChoice {
  bool feasible = false;
  double E = 0, G = 0, n_blocks = 0, d_model = 0, N_active = 0, N_total = 0, D = 0, loss = 0;
  int nodes = 0, devices = 0;
  perf::Prediction step;  // at the chosen EP (step.ep)
  double tokens_per_s = 0, wall_hours = 0, gpu_hours = 0, flops = 0;
};

// d^2 (8E + 4) n_blocks (MoE, E > 1) or 12 d^2 n_blocks (dense), d = 64 n_blocks.
double plan_total_params(double n_blocks, double E);

// The lowest predicted loss reachable with `gpu_hours` GPU-hours: over E, G, integer n_blocks,
// node count (fixed when fixed_nodes > 0) and EP, each layout fitting in memory; D = tokens/s x
// wall hours. feasible = false when nothing fits.
PlanChoice wallclock_optimal(const PlanLaw& law, const perf::Machine& machine, const PlanSearch& search,
                             double gpu_hours, int fixed_nodes = 0);

// What a given model (E, G, n_blocks rounded to an integer >= 1, D tokens) costs on the machine:
// the node count (fixed when fixed_nodes > 0) and EP with the fewest GPU-hours that fit.
PlanChoice cost_on_machine(const PlanLaw& law, const perf::Machine& machine, const PlanSearch& search, double E,
                           double G, double n_blocks, double D, int fixed_nodes = 0);

// Why the two choices differ, in sentences from their numbers.
std::vector<std::string> explain_difference(const PlanChoice& wallclock, const PlanChoice& flops_optimal,
                                            const perf::Machine& machine);

}  // namespace finemoe::analysis
