#include <cmath>
#include <cstdio>
#include <iostream>
#include <sstream>

#include "cli.h"
#include "results.h"
#include "util/check.h"

namespace finemoe::analysis::cli {

const char* const kUsage =
    "usage: finemoe-analyze fit RECORD|DIR|GLOB... [--law joint] [options]\n"
    "       finemoe-analyze optimal [--coefficients table1|table8 | --fit FIT.h5] [options]\n"
    "       finemoe-analyze optimal --law joint [--coefficients joint-secondary | --fit DIR/joint_fit.csv]\n"
    "                               [--max-e 64] [--memory-per-gpu-gb M --gpus K --bytes-per-param 16]\n"
    "       finemoe-analyze compare [--coefficients table1|table8 | --fit FIT.h5] [options]\n"
    "       finemoe-analyze plan --allocation ALLOC.ini (--gpu-hours H | --nodes N --hours T | --flops F)\n"
    "                            [--law joint] [--coefficients ... | --fit ...] [--peak-json --gemm-json --alltoall-json]\n"
    "       finemoe-analyze next RECORD|DIR|GLOB... --budget B --target F [--allocation ALLOC.ini] [--base P.ini --ranks R]\n";

std::optional<CommandLine> parse_command_line(int argc, char** argv) {
  const std::string command = argv[1];
  if (command != "fit" && command != "optimal" && command != "compare" && command != "plan" && command != "next") {
    throw InputError("'" + command + "' is not a command (fit, optimal, compare, plan, next)\n" + kUsage);
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
      "min-tokens", po::value<double>()->default_value(524288), "fewest training tokens a model may get")(
      "law", po::value<std::string>()->default_value("fine-grained"),
      "fine-grained (Eq. 9 per E, and the dense law) | joint (one law over several E, docs/analysis.md)")(
      "joint-form", po::value<std::string>()->default_value("fine-grained"),
      "joint: fine-grained ((a + g G^-kappa) Ê^delta N^...) | published (without the G term)")(
      "e-start", po::value<double>()->default_value(1), "joint: Ê transform, Ê(1) = E_start")(
      "e-max", po::value<double>()->default_value(INFINITY), "joint: Ê transform, Ê saturates at E_max (inf: Ê = E)")(
      "max-e", po::value<double>()->default_value(64), "joint optimal: largest expansion rate searched (powers of two)")(
      "memory-per-gpu-gb", po::value<double>()->default_value(0),
      "joint optimal: cap total parameters at this memory per GPU (0: no cap)")(
      "gpus", po::value<double>()->default_value(1), "joint optimal: GPUs holding the parameters (with --memory-per-gpu-gb)")(
      "bytes-per-param", po::value<double>()->default_value(16),
      "joint optimal: bytes per parameter (16: fp32 weights, grads, AdamW moments)")(
      "allocation", po::value<std::string>(), "plan: the allocation file (inputs/allocations/*.ini)")(
      "gpu-hours", po::value<double>(), "plan: budget in GPU-hours")(
      "nodes", po::value<int>(), "plan: fixed node count (with --hours)")(
      "hours", po::value<double>(), "plan: wall-clock hours on --nodes nodes")(
      "flops", po::value<double>(), "plan: budget in FLOPs: the GPU-hours the FLOPs-optimal run costs here")(
      "max-nodes", po::value<int>()->default_value(64), "plan: largest node count searched (powers of two)")(
      "batch-tokens", po::value<double>()->default_value(524288), "plan: global tokens per step")(
      "context", po::value<double>()->default_value(256), "plan: context length")(
      "vocab", po::value<double>()->default_value(50257), "plan: vocabulary size")(
      "max-blocks", po::value<int>()->default_value(160), "plan: largest n_blocks searched (d_model = 64 n_blocks)")(
      "peak-json", po::value<std::string>(), "plan: finemoe-bench gpu-peak JSON (calibrates dense GEMM efficiency)")(
      "gemm-json", po::value<std::string>(), "plan: finemoe-bench gpu-expert-gemm JSON (expert GEMM efficiency)")(
      "alltoall-json", po::value<std::string>(), "plan: finemoe-bench gpu-alltoall JSON (NVLink tier)")(
      "base", po::value<std::string>()->default_value("inputs/paper/base.ini"),
      "plan, next: parameter file the written sweep starts from")(
      "budget", po::value<double>(), "next: budget of the proposed runs (FLOPs; GPU-hours with --allocation)")(
      "target", po::value<double>(), "next: the FLOP budget whose optimal G (and loss) should be pinned down")(
      "ranks", po::value<int>()->default_value(8), "next: MPI ranks per proposed run")(
      "max-runs", po::value<int>()->default_value(24), "next: at most this many runs")(
      "set", po::value<std::vector<std::string>>()->composing(),
      "next: section.key=value for every proposed run (repeatable; written as the sweep's set lines)")(
      "blocks-grid", po::value<std::string>()->default_value("2,3,4,6,8,11,16,23,32"),
      "next: candidate n_blocks (d_model = --d-per-block x n_blocks)")(
      "d-per-block", po::value<double>()->default_value(64), "next: d_model per block of the candidates (the paper: 64)")(
      "head-dim", po::value<double>()->default_value(64), "next: head width of the candidates (n_heads = d_model / head-dim)")(
      "tokens-grid", po::value<std::string>()->default_value("1.25e8,1.28e11"),
      "next: candidate token budgets: MIN,MAX in factors of 2");
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
    return std::nullopt;
  }
  CommandLine cli;
  cli.command = command;
  cli.out_dir = vm["out"].as<std::string>();
  cli.json = vm.count("json") > 0;

  const std::string law_kind = vm["law"].as<std::string>();
  if (law_kind != "fine-grained" && law_kind != "joint") {
    throw InputError("--law: '" + law_kind + "' is not fine-grained or joint");
  }
  cli.joint = law_kind == "joint";
  cli.transform = ExpertTransform{vm["e-start"].as<double>(), vm["e-max"].as<double>()};
  if (!(cli.transform.e_start >= 1 && cli.transform.e_max > cli.transform.e_start)) {
    throw InputError("--e-start must be >= 1 and --e-max above it");
  }
  const std::string joint_form = vm["joint-form"].as<std::string>();
  if (joint_form != "fine-grained" && joint_form != "published") {
    throw InputError("--joint-form: '" + joint_form + "' is not fine-grained or published");
  }
  cli.joint_fine_grained = joint_form == "fine-grained";
  cli.vm = std::move(vm);
  return cli;
}

BudgetOptions budget_options(const po::variables_map& vm) {
  BudgetOptions b;
  b.flops.c_f = vm["c-f"].as<double>();
  b.flops.c_r = vm["c-r"].as<double>();
  b.flops.min_tokens = vm["min-tokens"].as<double>();
  if (!(b.flops.c_f > 0 && b.flops.c_r >= 0 && b.flops.min_tokens >= 1)) {
    throw InputError("--c-f must be > 0, --c-r >= 0 and --min-tokens >= 1");
  }
  const double max_g = vm["max-g"].as<double>();
  if (!(max_g >= 1)) throw InputError("--max-g must be at least 1");
  b.granularities = powers_of_two(max_g);
  b.budgets = parse_positive_list(vm["budgets"].as<std::string>(), "--budgets", "FLOPs", "no budgets given");
  return b;
}

std::vector<double> parse_positive_list(const std::string& text, const std::string& option,
                                        const std::string& unit, const std::string& when_empty) {
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
    if (used == 0 || used != item.size() || !std::isfinite(v) || !(v > 0)) {
      throw InputError(option + ": '" + item + "' is not a positive number" + (unit.empty() ? "" : " of " + unit));
    }
    out.push_back(v);
  }
  if (out.empty()) throw InputError(option + ": " + when_empty);
  return out;
}

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

std::string human(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.4g", v);
  return buf;
}

}  // namespace finemoe::analysis::cli
