// finemoe-analyze: scaling-law fits, compute-optimal configurations and the dense comparison
// from run records (docs/run-record.md describes the records it reads).
#include <boost/program_options.hpp>

#include <cmath>
#include <iostream>
#include <optional>
#include <sstream>

#include "fit.h"
#include "optimal.h"
#include "results.h"
#include "runs.h"
#include "util/check.h"

namespace po = boost::program_options;
using namespace finemoe;
using namespace finemoe::analysis;

namespace {

const char* const kUsage =
    "usage: finemoe-analyze fit RECORD|DIR|GLOB... [options]\n"
    "       finemoe-analyze optimal [--coefficients table1|table8 | --fit FIT.h5] [options]\n"
    "       finemoe-analyze compare [--coefficients table1|table8 | --fit FIT.h5] [options]\n";

std::vector<double> parse_budgets(const std::string& text) {
  std::vector<double> out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    std::size_t used = 0;
    double v = 0;
    try {
      v = std::stod(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != item.size() || !std::isfinite(v) || v <= 0) {
      throw InputError("--budgets: '" + item + "' is not a positive number of FLOPs");
    }
    out.push_back(v);
  }
  if (out.empty()) throw InputError("--budgets: no budgets given");
  return out;
}

struct Laws {
  std::string source;
  std::optional<LawCoefficients> moe, dense;
  double E = 0;
  std::vector<LawCoefficients> bootstrap;
  bool moe_identified = true, dense_identified = true;
};

Laws laws_from(const po::variables_map& vm) {
  Laws laws;
  if (vm.count("fit")) {
    if (!vm["coefficients"].defaulted()) throw InputError("give --coefficients or --fit, not both");
    const std::string path = vm["fit"].as<std::string>();
    const StoredFit fit = read_fit_file(path);
    laws.source = path;
    laws.moe = fit.moe;
    laws.dense = fit.dense;
    laws.E = double(fit.E);
    laws.bootstrap = fit.moe_bootstrap;
    laws.moe_identified = fit.moe_identified;
    laws.dense_identified = fit.dense_identified;
    return laws;
  }
  const LawPreset preset = law_preset(vm["coefficients"].as<std::string>());
  laws.source = "preset " + preset.name;
  laws.moe = preset.moe;
  laws.dense = preset.dense;
  laws.E = preset.E;
  return laws;
}

int run(int argc, char** argv) {
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h") {
    std::cout << kUsage;
    return argc < 2 ? 2 : 0;
  }
  const std::string command = argv[1];
  if (command != "fit" && command != "optimal" && command != "compare") {
    throw InputError("'" + command + "' is not a command (fit, optimal, compare)\n" + kUsage);
  }
  po::options_description common("options");
  common.add_options()("help,h", "this help")("out", po::value<std::string>()->default_value("analysis_results"),
                                             "folder for the HDF5, CSV and SVG results")(
      "json", "print JSON instead of a table")("threads", po::value<int>()->default_value(0),
                                               "threads for the fits (0 = OpenMP default)")(
      "preset", po::value<std::string>()->default_value("paper"),
      "fit: paper (Huber 0.1 on the loss) | chinchilla (log-sum-exp, Huber 1e-3 on log-loss)")(
      "loss", po::value<std::string>()->default_value("eval"), "fit: eval | smoothed_train")(
      "mix-variants",
      "fit: fit runs that differ in moe.shared_experts, a gated FFN (swiglu) or moe.balance under one law "
      "(refused otherwise)")(
      "bootstrap", po::value<int>()->default_value(100), "fit: bootstrap resamples")(
      "bootstrap-fraction", po::value<double>()->default_value(0.8),
      "fit: runs drawn (with replacement) per resample, as a fraction of the runs (the paper: 0.8)")(
      "weight-decay", po::value<double>()->default_value(0),
      "fit: L2 penalty on the fitted parameters (the paper: 5e-4; biases c, b, beta towards 0)")(
      "c-min", po::value<double>()->default_value(0), "fit: lower bound on c (-inf: none)")(
      "start-levels", po::value<int>()->default_value(2),
      "fit: values per coefficient in the multi-start grid, 2 (128 starts) or 3 (2187)")(
      "refit-starts", po::value<int>()->default_value(2),
      "fit: starts of each bootstrap/k-fold fit taken from the best distinct local minima of the full fit")(
      "refit-grid-starts", po::value<int>()->default_value(2),
      "fit: further starts of each bootstrap/k-fold fit, spread over the start grid")(
      "kfold", po::value<int>()->default_value(5), "fit: folds for k-fold validation (0 = none)")(
      "seed", po::value<uint64_t>()->default_value(1), "fit: seed for k-fold and bootstrap draws")(
      "coefficients", po::value<std::string>()->default_value("table1"), "optimal/compare: table1 | table8")(
      "fit", po::value<std::string>(), "optimal/compare: a fit.h5 written by finemoe-analyze fit")(
      "budgets", po::value<std::string>()->default_value("2.95e18,1.93e20,1.41e21,6.46e21,4.16e23,5.69e24,4.97e25"),
      "optimal/compare: FLOP budgets, comma separated")("c-f", po::value<double>()->default_value(6),
                                                       "FLOPs per active parameter per token")(
      "c-r", po::value<double>()->default_value(14), "router FLOPs per router parameter per token")(
      "max-g", po::value<double>()->default_value(256), "largest granularity searched (powers of two)")(
      "min-tokens", po::value<double>()->default_value(524288), "fewest training tokens a model may get");
  po::options_description hidden;
  hidden.add_options()("inputs", po::value<std::vector<std::string>>()->composing());
  po::options_description all;
  all.add(common).add(hidden);
  po::positional_options_description positional;
  positional.add("inputs", -1);
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(argc - 1, argv + 1).options(all).positional(positional).run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    throw InputError(std::string(e.what()) + "\n" + kUsage);
  }
  if (vm.count("help")) {
    std::cout << kUsage << common;
    return 0;
  }
  const std::string out_dir = vm["out"].as<std::string>();
  const bool json = vm.count("json") > 0;

  if (command == "fit") {
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
    if (json) {
      print_fit_json(std::cout, report);
    } else {
      print_fit_table(std::cout, report);
      std::cout << "\nresults in " << out_dir << "/ (fit.h5, fit.csv, fit_runs.csv, *.svg)\n";
    }
    return 0;
  }

  if (vm.count("inputs")) throw InputError(command + " takes no record files (use --fit FIT.h5)");
  FlopsModel flops;
  flops.c_f = vm["c-f"].as<double>();
  flops.c_r = vm["c-r"].as<double>();
  flops.min_tokens = vm["min-tokens"].as<double>();
  if (!(flops.c_f > 0 && flops.c_r >= 0 && flops.min_tokens >= 1)) {
    throw InputError("--c-f must be > 0, --c-r >= 0 and --min-tokens >= 1");
  }
  const double max_g = vm["max-g"].as<double>();
  if (!(max_g >= 1)) throw InputError("--max-g must be at least 1");
  const std::vector<double> granularities = powers_of_two(max_g);
  const std::vector<double> budgets = parse_budgets(vm["budgets"].as<std::string>());
  const Laws laws = laws_from(vm);

  if (command == "optimal") {
    OptimalReport report;
    report.source = laws.source;
    const bool moe = laws.moe.has_value();
    report.E = moe ? laws.E : 0;
    report.identified = moe ? laws.moe_identified : laws.dense_identified;
    for (double budget : budgets) {
      report.rows.push_back(optimal_row(moe ? *laws.moe : *laws.dense, report.E, granularities, budget, flops,
                                        laws.bootstrap));
    }
    write_optimal_files(out_dir, report);
    if (json) {
      print_optimal_json(std::cout, report);
    } else {
      print_optimal_table(std::cout, report);
    }
    return 0;
  }

  if (!laws.moe || !laws.dense) {
    throw InputError(laws.source + ": compare needs both a MoE and a dense law (fit MoE and dense records together)");
  }
  CompareReport report;
  report.source = laws.source;
  report.E = laws.E;
  for (double budget : budgets) {
    report.rows.push_back(compare_row(*laws.moe, *laws.dense, laws.E, granularities, budget, flops));
  }
  write_compare_files(out_dir, report);
  if (json) {
    print_compare_json(std::cout, report);
  } else {
    print_compare_table(std::cout, report);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return finemoe::run_tool("finemoe-analyze", run, argc, argv); }
