#pragma once
// What `finemoe-analyze fit --law joint` writes and `optimal --law joint --fit` reads back:
// joint_fit.csv (form, transform, flags, coefficients with bands) and joint_bootstrap.csv (one
// row of coefficients per bootstrap resample); tables of the fit and of the optimum over E.
#include <ostream>
#include <string>
#include <vector>

#include "joint_fit.h"
#include "joint_optimal.h"

namespace finemoe::analysis {

void write_joint_fit_files(const std::string& dir, const JointFitResult& fit, const std::vector<JointRun>& runs);
void print_joint_fit_table(std::ostream& os, const JointFitResult& fit);

struct StoredJointFit {
  JointLaw law;
  std::vector<JointLaw> bootstrap;
  bool identified = true;
};
// InputError naming the file and line when it is not a joint_fit.csv.
StoredJointFit read_joint_fit(const std::string& path);

struct JointOptimalReport {
  std::string source;
  bool identified = true;  // false: printed as an extrapolation of an unidentified law
  double max_total_params = 0;  // 0: no cap
  std::vector<JointOptimalRow> rows;
};
void print_joint_optimal_table(std::ostream& os, const JointOptimalReport& report);
void write_joint_optimal_csv(const std::string& dir, const JointOptimalReport& report);

}  // namespace finemoe::analysis
