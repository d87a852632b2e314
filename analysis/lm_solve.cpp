#include "lm_solve.h"

namespace finemoe::analysis {

ceres::Solver::Summary solve_lm(ceres::Problem& problem, const LmTolerances& tolerances) {
  ceres::Solver::Options options;
  options.linear_solver_type = ceres::DENSE_QR;
  options.max_num_iterations = tolerances.max_iterations;
  options.function_tolerance = tolerances.function;
  options.gradient_tolerance = tolerances.gradient;
  options.parameter_tolerance = tolerances.parameter;
  options.logging_type = ceres::SILENT;
  options.num_threads = 1;
  ceres::Solver::Summary summary;
  ceres::Solve(options, &problem, &summary);
  return summary;
}

}  // namespace finemoe::analysis
