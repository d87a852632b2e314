#pragma once
// Fitting the joint law (joint_law.h) to runs of several E, dense runs included as E = 1, G = 1:
// Ceres Levenberg-Marquardt from a grid of starts, Huber loss, bootstrap percentile bands and
// identifiability flags as in fit.h (docs/analysis.md, "The joint law in E").
#include <cstdint>
#include <string>
#include <vector>

#include "fit.h"
#include "joint_law.h"
#include "runs.h"

namespace finemoe::analysis {

struct JointRun {
  std::string path;
  double N_active = 0;  // 12 d_model^2 n_blocks
  double D = 0;
  double E = 1;  // expansion rate; 1 for dense runs
  double G = 1;
  double loss = 0;
};
// The MoE and dense runs of a record set, in that order.
std::vector<JointRun> joint_runs(const RunSet& set);

struct JointFitOptions {
  FitPreset preset = FitPreset::paper;  // paper: Huber 0.1 on the loss; chinchilla: Huber 1e-3 on log-loss
  bool fine_grained = true;
  ExpertTransform transform;
  double c_min = 0;
  int bootstrap = 100;
  double bootstrap_fraction = 0.8;
  uint64_t seed = 1;
  int threads = 0;
};

struct JointFitResult {
  JointLaw law;
  std::size_t n_runs = 0;
  std::vector<double> predicted;
  double rmse = 0;
  std::vector<JointLaw> bootstrap;
  std::vector<Band> bands;  // per coefficient, names() order
  FitDiagnostics diagnostics;
  int distinct_E = 0, distinct_G = 0;
  std::vector<IdentifiabilityFlag> flags;
  bool identified() const { return flags.empty(); }
};

// InputError with fewer runs than coefficients, fewer than two distinct E, or a run with a
// non-positive N, D, E, G or loss (naming the record).
JointFitResult fit_joint_law(const std::vector<JointRun>& runs, const JointFitOptions& options);

}  // namespace finemoe::analysis
