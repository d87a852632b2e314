#pragma once
// finemoe-analyze next: the runs that most shrink the uncertainty of the compute-optimal G (and
// loss) at a target budget, per unit of cost (docs/analysis.md, "The next runs to make").
//
// Criterion (a linearised, delta-method design criterion):
//   Sigma = (J^T J / s^2 + P)^-1   the covariance of the law's coefficients: J the Jacobian of the
//                                  predicted loss of each run so far, s the fit's RMSE, P a weak
//                                  Gaussian prior (sd = prior_scale (|coef| + 0.1) per coefficient)
//                                  so that coefficients the runs do not determine stay finite
//   U = g^T Sigma g / U_g + w h^T Sigma h / U_h      (w = loss_weight)
//       g = grad log2 G* (G* the compute-optimal granularity at the target, continuous in log2 G),
//       h = grad L* (the optimal loss there); U_g, U_h their variances before the proposal
//   A candidate run with Jacobian row j and cost c lowers U by
//       ((g^T Sigma j)^2 / U_g + w (h^T Sigma j)^2 / U_h) / (s^2 + j^T Sigma j)   (Sherman-Morrison)
//   Runs are picked greedily by that reduction per unit of cost + overhead, Sigma updated after
//   each, until the budget is spent or max_runs are picked; a candidate is picked at most once.
//   overhead = overhead_fraction x budget / max_runs stands for what every run costs besides its FLOPs (a job, a
//   queue slot, its evaluation): without it the criterion fills the budget with hundreds of tiny runs.
#include <functional>
#include <string>
#include <vector>

#include "optimal.h"
#include "runs.h"
#include "scaling_law.h"

namespace finemoe::analysis {

struct NextCandidate {
  double n_blocks = 0, G = 1, D = 0;
  double d_model = 0;  // d_per_block x n_blocks
  double cost = 0;
  double gain = 0;  // reduction of U when picked (in the order picked)
};

struct NextOptions {
  double budget = 0;  // in the cost's unit
  double target = 0;  // FLOPs at which G* and L* are wanted
  double max_g = 64;
  std::vector<double> n_blocks_grid = {2, 3, 4, 6, 8, 11, 16, 23, 32};
  double d_per_block = 64;  // candidates have d_model = d_per_block x n_blocks (the paper's rule: 64)
  std::vector<double> token_grid;  // default: 0.125B .. 128B in factors of 2
  double prior_scale = 10;
  int max_runs = 24;
  double overhead_fraction = 0.25;  // per-run overhead = overhead_fraction x budget / max_runs
  double loss_weight = 1;           // weight of the L* term in U (0: G* alone)
  FlopsModel flops;
};

struct NextProposal {
  std::vector<NextCandidate> runs;
  double spent = 0;
  double log2_G_star = 0, loss_star = 0;
  double sd_log2_G_before = 0, sd_log2_G_after = 0, sd_loss_before = 0, sd_loss_after = 0;
};

// log2 of the compute-optimal G at `budget`, minimised over continuous log2 G in [0, log2 max_g].
double continuous_log2_optimal_G(const LawCoefficients& law, double E, double budget, double max_g,
                                 const FlopsModel& flops);

// Eq. 10 FLOPs of a candidate: (12 d^2 c_f + d E G c_r) n_blocks D.
double candidate_flops(const NextCandidate& c, double E, const FlopsModel& flops);

// The greedy proposal. `cost` gives each candidate's cost (FLOPs, GPU-hours, ...); `runs` are the
// runs the law was fitted to (N total, D, G), `rmse` the fit's RMSE on the loss.
NextProposal propose_next_runs(const LawCoefficients& law, double E, const std::vector<Run>& runs, double rmse,
                               const NextOptions& options, const std::function<double(const NextCandidate&)>& cost);

// The criterion's pieces, exposed for tests: the covariance of the coefficients given runs, the
// gradients g and h, and the Jacobian row of a run (N total, D, G).
std::vector<double> law_gradient_row(const LawCoefficients& law, double N, double D, double G);

}  // namespace finemoe::analysis
