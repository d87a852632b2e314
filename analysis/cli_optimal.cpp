// finemoe-analyze optimal: the compute-optimal configuration per FLOP budget (Eq. 10) of a fitted
// or preset law: the fine-grained law at its E (or the dense law), or with --law joint the joint
// law over E and G.
#include <iostream>

#include "cli.h"
#include "joint_optimal.h"
#include "joint_results.h"
#include "results.h"
#include "util/check.h"

namespace finemoe::analysis::cli {
namespace {

int run_joint_optimal(const CommandLine& cli, const BudgetOptions& budget) {
  const po::variables_map& vm = cli.vm;
  const std::string& out_dir = cli.out_dir;
  JointOptimalReport report;
  JointLaw law;
  std::vector<JointLaw> bootstrap;
  if (vm.count("fit")) {
    if (!vm["coefficients"].defaulted()) throw InputError("give --coefficients or --fit, not both");
    const StoredJointFit stored = read_joint_fit(vm["fit"].as<std::string>());
    law = stored.law;
    bootstrap = stored.bootstrap;
    report.identified = stored.identified;
    report.source = vm["fit"].as<std::string>();
  } else {
    const std::string name = vm["coefficients"].defaulted() ? "joint-secondary" : vm["coefficients"].as<std::string>();
    const JointPreset preset = joint_preset(name);
    law = preset.law;
    report.source = "preset " + preset.name + ": " + preset.provenance;
  }
  JointSearch search;
  search.flops = budget.flops;
  search.granularities = budget.granularities;
  const double max_e = vm["max-e"].as<double>();
  if (!(max_e >= 1)) throw InputError("--max-e must be at least 1");
  search.expansion_rates = powers_of_two(max_e);
  const double mem = vm["memory-per-gpu-gb"].as<double>(), gpus = vm["gpus"].as<double>();
  const double bytes = vm["bytes-per-param"].as<double>();
  if (!(mem >= 0 && gpus >= 1 && bytes > 0)) {
    throw InputError("--memory-per-gpu-gb must be >= 0, --gpus >= 1 and --bytes-per-param > 0");
  }
  if (mem > 0) search.max_total_params = report.max_total_params = mem * 1e9 * gpus / bytes;
  for (double flops : budget.budgets) report.rows.push_back(joint_optimal_row(law, flops, search, bootstrap));
  write_joint_optimal_csv(out_dir, report);
  print_joint_optimal_table(std::cout, report);
  return 0;
}

}  // namespace

int run_optimal_command(const CommandLine& cli, const BudgetOptions& budget) {
  if (cli.joint) return run_joint_optimal(cli, budget);
  const Laws laws = laws_from(cli.vm);
  OptimalReport report;
  report.source = laws.source;
  const bool moe = laws.moe.has_value();
  report.E = moe ? laws.E : 0;
  report.identified = moe ? laws.moe_identified : laws.dense_identified;
  for (double flops : budget.budgets) {
    report.rows.push_back(optimal_row(moe ? *laws.moe : *laws.dense, report.E, budget.granularities, flops,
                                      budget.flops, laws.bootstrap));
  }
  write_optimal_files(cli.out_dir, report);
  if (cli.json) {
    print_optimal_json(std::cout, report);
  } else {
    print_optimal_table(std::cout, report);
  }
  return 0;
}

}  // namespace finemoe::analysis::cli
