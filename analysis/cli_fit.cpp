// finemoe-analyze fit: the fine-grained laws (Eq. 9 per E, and the dense law) or, with --law joint,
// the joint law in E, fitted to run records.
#include <cmath>
#include <iostream>

#include "cli.h"
#include "joint_fit.h"
#include "joint_results.h"
#include "results.h"
#include "runs.h"
#include "util/check.h"

namespace finemoe::analysis::cli {
namespace {

int run_joint_fit(const CommandLine& cli) {
  const po::variables_map& vm = cli.vm;
  const std::string& out_dir = cli.out_dir;
  if (!vm.count("inputs")) throw InputError("fit: give run records, directories or globs\n" + std::string(kUsage));
  JointFitOptions options;
  options.preset = parse_fit_preset(vm["preset"].as<std::string>());
  options.fine_grained = cli.joint_fine_grained;
  options.transform = cli.transform;
  options.bootstrap = vm["bootstrap"].as<int>();
  options.bootstrap_fraction = vm["bootstrap-fraction"].as<double>();
  options.c_min = vm["c-min"].as<double>();
  options.seed = vm["seed"].as<uint64_t>();
  options.threads = vm["threads"].as<int>();
  if (options.bootstrap < 0 || !(options.bootstrap_fraction > 0 && options.bootstrap_fraction <= 1)) {
    throw InputError("--bootstrap must be >= 0 and --bootstrap-fraction in (0, 1]");
  }
  const std::vector<std::string> paths = expand_inputs(vm["inputs"].as<std::vector<std::string>>());
  const RunSet set = load_runs(paths, parse_loss_source(vm["loss"].as<std::string>()));
  for (const auto& s : set.skipped) std::cerr << "left out " << s.path << ": " << s.state << ": " << s.reason << "\n";
  const std::vector<JointRun> runs = joint_runs(set);
  const JointFitResult fit = fit_joint_law(runs, options);
  write_joint_fit_files(out_dir, fit, runs);
  print_joint_fit_table(std::cout, fit);
  std::cout << "\nresults in " << out_dir << "/ (joint_fit.csv, joint_bootstrap.csv, joint_fit_runs.csv)\n";
  return 0;
}

}  // namespace

int run_fit_command(const CommandLine& cli) {
  if (cli.joint) return run_joint_fit(cli);
  const po::variables_map& vm = cli.vm;
  const std::string& out_dir = cli.out_dir;
  if (!vm.count("inputs")) throw InputError("fit: give run records, directories or globs\n" + std::string(kUsage));
  FitOptions options;
  options.preset = parse_fit_preset(vm["preset"].as<std::string>());
  options.bootstrap = vm["bootstrap"].as<int>();
  options.kfold = vm["kfold"].as<int>();
  options.seed = vm["seed"].as<uint64_t>();
  options.threads = vm["threads"].as<int>();
  options.bootstrap_fraction = vm["bootstrap-fraction"].as<double>();
  options.weight_decay = vm["weight-decay"].as<double>();
  options.c_min = vm["c-min"].as<double>();
  options.start_levels = vm["start-levels"].as<int>();
  options.refit_starts = vm["refit-starts"].as<int>();
  options.refit_grid_starts = vm["refit-grid-starts"].as<int>();
  if (options.bootstrap < 0 || options.kfold < 0 || options.kfold == 1) {
    throw InputError("--bootstrap must be >= 0 and --kfold 0 or >= 2");
  }
  if (!(options.bootstrap_fraction > 0 && options.bootstrap_fraction <= 1) || !(options.weight_decay >= 0) ||
      std::isnan(options.c_min) || options.c_min == INFINITY || (options.start_levels != 2 && options.start_levels != 3) ||
      options.refit_starts < 1 || options.refit_grid_starts < 0) {
    throw InputError(
        "--bootstrap-fraction must be in (0, 1], --weight-decay >= 0, --c-min a number or -inf, --start-levels 2 "
        "or 3, --refit-starts >= 1 and --refit-grid-starts >= 0");
  }
  FitReport report;
  report.loss = parse_loss_source(vm["loss"].as<std::string>());
  const std::vector<std::string> paths = expand_inputs(vm["inputs"].as<std::vector<std::string>>());
  RunSet set = load_runs(paths, report.loss);
  report.skipped = set.skipped;
  for (const auto& s : set.skipped) std::cerr << "left out " << s.path << ": " << s.state << ": " << s.reason << "\n";
  if (set.moe.empty() && set.dense.empty()) {
    throw InputError("none of the " + std::to_string(paths.size()) + " record(s) is a completed run");
  }
  // Issue 20: shared experts, swiglu and the balancing method change the model; one law per variant.
  const bool mix = vm.count("mix-variants") > 0;
  check_one_variant(set.moe, "MoE", mix);
  check_one_variant(set.dense, "dense", mix);
  report.moe_runs = set.moe;
  report.dense_runs = set.dense;
  // A law with fewer runs than coefficients is skipped with a warning; the other is fitted.
  const auto enough = [](const std::vector<Run>& runs, std::size_t n_coef, const char* law) {
    if (runs.empty()) return false;
    if (runs.size() >= n_coef) return true;
    std::cerr << "warning: the " << law << " law is not fitted: " << runs.size() << " completed run"
              << (runs.size() == 1 ? "" : "s") << " for " << n_coef << " coefficients\n";
    return false;
  };
  const bool fit_moe = enough(set.moe, 7, "MoE"), fit_dense = enough(set.dense, 5, "dense");
  if (!fit_moe && !fit_dense) {
    throw InputError("the MoE fit has " + std::to_string(set.moe.size()) + " completed runs and 7 coefficients, the dense fit " +
                     std::to_string(set.dense.size()) + " and 5: each needs at least as many runs as coefficients");
  }
  if (fit_moe) report.moe = fit_law(set.moe, options);
  if (fit_dense) report.dense = fit_law(set.dense, options);
  write_fit_files(out_dir, report);
  if (cli.json) {
    print_fit_json(std::cout, report);
  } else {
    print_fit_table(std::cout, report);
    std::cout << "\nresults in " << out_dir << "/ (fit.h5, fit.csv, fit_runs.csv, *.svg)\n";
  }
  return 0;
}

}  // namespace finemoe::analysis::cli
