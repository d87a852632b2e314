#pragma once
// Compute-optimal configurations under the joint law (joint_law.h), over n_blocks (the shape rule
// d_model = 64 n_blocks), the granularity G and the expansion rate E, with the FLOPs model of
// optimal.h (E = 1 is the dense model) and an optional cap on total parameters (memory per GPU
// times GPUs over bytes per parameter): the memory-constrained optimum of Ludziejewski et al. 2025.
#include <limits>
#include <vector>

#include "fit.h"
#include "joint_law.h"
#include "optimal.h"

namespace finemoe::analysis {

struct JointSearch {
  std::vector<double> expansion_rates = {1, 2, 4, 8, 16, 32, 64};  // 1 = dense
  std::vector<double> granularities = {1, 2, 4, 8, 16, 32, 64};    // ignored (G = 1) for the plain joint law
  double max_total_params = std::numeric_limits<double>::infinity();
  FlopsModel flops;
};

struct JointConfig {
  double budget = 0, E = 1, G = 1;
  double n_blocks = 0, d_model = 0, N_active = 0, N_total = 0, D = 0, loss = 0;
  bool memory_bound = false;  // the optimum sits on the total-parameter cap
  bool feasible = false;
};

// d^2 (8E + 4) n_blocks for E > 1, 12 d^2 n_blocks for E = 1 (dense), d = 64 n_blocks.
double joint_total_params(double n_blocks, double E);

// The best n_blocks for one (E, G); feasible = false when no model fits the budget and the cap.
JointConfig joint_optimal_for(const JointLaw& law, double E, double G, double budget, const JointSearch& search);

struct JointOptimalRow {
  JointConfig best;
  std::vector<JointConfig> per_E;  // the best G for each feasible E
  bool has_bands = false;
  Band E, G, N_active, D, loss;  // over the bootstrap laws
};
// InputError when no (E, G) fits the budget and the cap.
JointOptimalRow joint_optimal_row(const JointLaw& law, double budget, const JointSearch& search,
                                  const std::vector<JointLaw>& bootstrap = {});

}  // namespace finemoe::analysis
