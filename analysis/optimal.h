#pragma once
// Compute-optimal configurations under the paper's FLOPs model (Eq. 10):
//   F = (12 d^2 c_f + d E G c_r) D n_blocks,  d = d_model = 64 n_blocks,
// with N = d^2 (8E + 4) n_blocks for MoE and N = 12 d^2 n_blocks for dense models. For each G
// the loss is minimised over n_blocks (continuous) with Brent's method; D = F / FLOPs per token.
#include <functional>
#include <vector>

#include "fit.h"
#include "scaling_law.h"

namespace finemoe::analysis {

struct FlopsModel {
  double c_f = 6;   // forward + backward FLOPs per active parameter per token
  double c_r = 14;  // router FLOPs per router parameter per token
  double min_tokens = 524288;  // the smallest run trains on one batch (0.5M tokens)
  double flops_per_token(double n_blocks, double E, double G) const;  // E = 0: dense
};

struct OptimalConfig {
  double budget = 0;
  double G = 0;  // 0 for dense
  double n_blocks = 0, d_model = 0;
  double N_active = 0;  // 12 d^2 n_blocks
  double N_total = 0;   // the law's N
  double D = 0;
  double loss = 0;
};

// Powers of two 1, 2, 4, ... up to max_G.
std::vector<double> powers_of_two(double max_G);

// The best n_blocks for one G. InputError when the budget cannot train the smallest model
// (n_blocks = 1) on min_tokens tokens.
OptimalConfig optimal_for_granularity(const LawCoefficients& law, double E, double G, double budget,
                                      const FlopsModel& flops);
// The best over granularities (MoE law) or the dense optimum (dense law; granularities ignored).
OptimalConfig optimal_config(const LawCoefficients& law, double E, const std::vector<double>& granularities,
                             double budget, const FlopsModel& flops);

// The compute a compute-optimal dense model needs to reach `loss`: +inf when the dense law
// never gets there (loss at or below its c).
double dense_compute_for_loss(const LawCoefficients& dense, double loss, const FlopsModel& flops);

// The optimum at one budget, the optimum for each G, and (given bootstrap fits) the 10th and
// 90th percentiles of the optimum over the bootstrap coefficients.
struct OptimalRow {
  OptimalConfig best;
  std::vector<OptimalConfig> per_G;  // feasible granularities only; empty for dense laws
  bool has_bands = false;
  Band N_active, D, G, loss;
};
OptimalRow optimal_row(const LawCoefficients& law, double E, const std::vector<double>& granularities,
                       double budget, const FlopsModel& flops, const std::vector<LawCoefficients>& bootstrap);

// The paper's "dense-equivalent compute": the compute a compute-optimal dense model needs to
// match the compute-optimal MoE's loss at the budget, and its ratio to the budget.
struct CompareRow {
  double budget = 0;
  OptimalConfig moe, dense;  // the optima at this budget
  double dense_equivalent_flops = 0;
  double multiplier = 0;
};
CompareRow compare_row(const LawCoefficients& moe_law, const LawCoefficients& dense_law, double E,
                       const std::vector<double>& granularities, double budget, const FlopsModel& flops);

// Brent's method for a minimum of f on [lo, hi]: returns the argument.
double brent_minimize(const std::function<double(double)>& f, double lo, double hi, double tolerance);

}  // namespace finemoe::analysis
