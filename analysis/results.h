#pragma once
// What finemoe-analyze reports: tables on stdout, JSON, and files (HDF5, CSV, SVG plots) in an
// output folder. The fit file written here is what `optimal --fit` and `compare --fit` read.
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "fit.h"
#include "optimal.h"
#include "runs.h"

namespace finemoe::analysis {

struct FitReport {
  LossSource loss = LossSource::eval;
  std::vector<Run> moe_runs, dense_runs;
  std::optional<FitResult> moe, dense;
  std::vector<SkippedRecord> skipped;
};

// fit.h5, fit.csv (coefficients, bands, metrics), fit_runs.csv (observed and predicted per run)
// and the plots observed_vs_predicted.svg, loss_vs_N.svg, loss_vs_G.svg (MoE fits).
void write_fit_files(const std::string& dir, const FitReport& report);
void print_fit_table(std::ostream& os, const FitReport& report);
void print_fit_json(std::ostream& os, const FitReport& report);

// Laws read back from fit.h5. InputError naming the file when it is not one.
struct StoredFit {
  std::optional<LawCoefficients> moe, dense;
  int64_t E = 0;
  std::vector<LawCoefficients> moe_bootstrap;
  bool moe_identified = true, dense_identified = true;  // false when the fit raised identifiability flags
};
StoredFit read_fit_file(const std::string& path);

struct OptimalReport {
  std::string source;  // "preset table1" or the fit file
  double E = 0;
  // false: the fit raised identifiability flags, and the rows are printed as an extrapolation
  bool identified = true;
  std::vector<OptimalRow> rows;
};
// optimal.h5, optimal.csv, optimal_G.svg and optimal_N_D.svg.
void write_optimal_files(const std::string& dir, const OptimalReport& report);
void print_optimal_table(std::ostream& os, const OptimalReport& report);
void print_optimal_json(std::ostream& os, const OptimalReport& report);

struct CompareReport {
  std::string source;
  double E = 0;
  std::vector<CompareRow> rows;
};
// compare.h5, compare.csv and compare.svg.
void write_compare_files(const std::string& dir, const CompareReport& report);
void print_compare_table(std::ostream& os, const CompareReport& report);
void print_compare_json(std::ostream& os, const CompareReport& report);

}  // namespace finemoe::analysis
