#pragma once
// Levenberg-Marquardt through Ceres with the analysis' common settings (dense QR, silent, one
// thread: fits run side by side in the bootstrap); the laws differ only in their tolerances.
#include <ceres/ceres.h>

namespace finemoe::analysis {

struct LmTolerances {
  int max_iterations = 500;
  double function = 1e-15;
  double gradient = 1e-15;
  double parameter = 1e-13;
};

ceres::Solver::Summary solve_lm(ceres::Problem& problem, const LmTolerances& tolerances = {});

}  // namespace finemoe::analysis
