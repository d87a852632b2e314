// finemoe-analyze: scaling-law fits, compute-optimal configurations and the dense comparison
// from run records (docs/run-record.md describes the records it reads).
#include <boost/program_options.hpp>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>

#include "fit.h"
#include "joint_fit.h"
#include "joint_optimal.h"
#include "joint_results.h"
#include "optimal.h"
#include "next.h"
#include "plan.h"
#include "perf/calibration.h"
#include "sweep/allocation.h"
#include "sweep/expand.h"
#include "sweep/sweep_definition.h"
#include "results.h"
#include "runs.h"
#include "util/check.h"

namespace po = boost::program_options;
using namespace finemoe;
using namespace finemoe::analysis;

namespace {

const char* const kUsage =
    "usage: finemoe-analyze fit RECORD|DIR|GLOB... [--law joint] [options]\n"
    "       finemoe-analyze optimal [--coefficients table1|table8 | --fit FIT.h5] [options]\n"
    "       finemoe-analyze optimal --law joint [--coefficients joint-secondary | --fit DIR/joint_fit.csv]\n"
    "                               [--max-e 64] [--memory-per-gpu-gb M --gpus K --bytes-per-param 16]\n"
    "       finemoe-analyze compare [--coefficients table1|table8 | --fit FIT.h5] [options]\n"
    "       finemoe-analyze plan --allocation ALLOC.ini (--gpu-hours H | --nodes N --hours T | --flops F)\n"
    "                            [--law joint] [--coefficients ... | --fit ...] [--peak-json --gemm-json --alltoall-json]\n"
    "       finemoe-analyze next RECORD|DIR|GLOB... --budget B --target F [--allocation ALLOC.ini] [--base P.ini --ranks R]\n";

// A comma-separated list of positive finite numbers; InputError naming the option and the bad item.
std::vector<double> parse_positive_list(const std::string& text, const std::string& option,
                                        const std::string& unit = "", const std::string& when_empty = "empty list") {
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

std::string human(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.4g", v);
  return buf;
}

void print_choice(std::ostream& os, const char* title, const PlanChoice& c) {
  char line[400];
  os << title << "\n";
  if (!c.feasible) {
    os << "  no model of the search fits this machine\n";
    return;
  }
  std::snprintf(line, sizeof line,
                "  E %g, G %g, d_model %.0f, n_blocks %.0f: N_active %.4g, N_total %.4g; D %.4g tokens; predicted loss %.4f\n"
                "  %d node(s), %d GPUs, EP %d: step %.4g s, %.4g tokens/s, MFU %.1f%%, communication %.0f%% of the step, "
                "%.3g GB of state per GPU\n"
                "  %.4g h wall clock, %.4g GPU-hours, %.4g FLOPs (Eq. 10)\n",
                c.E, c.G, c.d_model, c.n_blocks, c.N_active, c.N_total, c.D, c.loss, c.nodes, c.devices, c.step.ep,
                c.step.step_s, c.tokens_per_s, 100 * c.step.mfu, 100 * c.step.comm_share, c.step.mem_bytes / 1e9,
                c.wall_hours, c.gpu_hours, c.flops);
  os << line;
}

// finemoe-analyze plan (docs/analysis.md, "Hours, not FLOPs").
int run_plan_command(const po::variables_map& vm, bool joint, bool joint_fine_grained, const FlopsModel& flops,
                     const std::vector<double>& granularities, const std::string& out_dir) {
  if (!vm.count("allocation")) throw InputError("plan: --allocation FILE is required");
  const std::string alloc_path = vm["allocation"].as<std::string>();
  const sweep::Allocation alloc = sweep::read_allocation(alloc_path);
  perf::Machine machine;
  perf::apply_allocation(machine, alloc);
  for (const char* key : {"peak-json", "gemm-json", "alltoall-json"}) {
    if (vm.count(key)) perf::calibrate_from_json(machine, vm[key].as<std::string>());
  }
  if (alloc.gpus_per_node == 0) {
    machine.provenance["peak"] += " (a CPU allocation: a rank stands for a GPU)";
  }

  PlanSearch search;
  search.flops = flops;
  search.batch_tokens = vm["batch-tokens"].as<double>();
  search.context = vm["context"].as<double>();
  search.vocab = vm["vocab"].as<double>();
  search.max_blocks = vm["max-blocks"].as<int>();
  const int max_nodes = vm["max-nodes"].as<int>();
  if (!(search.batch_tokens > 0 && search.context >= 1 && search.vocab >= 1 && search.max_blocks >= 1 && max_nodes >= 1)) {
    throw InputError("plan: --batch-tokens, --context, --vocab, --max-blocks and --max-nodes must be positive");
  }
  search.node_counts.clear();
  for (int n = 1; n <= max_nodes; n *= 2) search.node_counts.push_back(n);

  PlanLaw law;
  law.granularities = granularities;
  if (joint) {
    JointLaw k;
    if (vm.count("fit")) {
      const StoredJointFit stored = read_joint_fit(vm["fit"].as<std::string>());
      k = stored.law;
      law.identified = stored.identified;
      law.source = vm["fit"].as<std::string>();
    } else {
      const std::string name = vm["coefficients"].defaulted() ? "joint-secondary" : vm["coefficients"].as<std::string>();
      const JointPreset preset = joint_preset(name);
      k = preset.law;
      law.source = "preset " + preset.name + " (" + preset.provenance + ")";
    }
    (void)joint_fine_grained;
    law.expansion_rates = powers_of_two(vm["max-e"].as<double>());
    if (!k.fine_grained) law.granularities = {1};
    law.loss = [k](double n_act, double, double D, double E, double G) { return k.predict(n_act, D, E, G); };
    JointSearch js;
    js.flops = flops;
    js.expansion_rates = law.expansion_rates;
    js.granularities = law.granularities;
    law.flops_optimal = [k, js](double F) {
      const JointConfig c = joint_optimal_row(k, F, js).best;
      return PlanLaw::FlopsOptimum{c.E, c.G, c.n_blocks, c.D, c.loss};
    };
  } else {
    const Laws laws = laws_from(vm);
    if (!laws.moe) throw InputError(laws.source + ": plan needs a MoE law (fit MoE records, or a preset)");
    const LawCoefficients k = *laws.moe;
    const double E = laws.E;
    law.source = laws.source + ", E = " + human(E);
    law.identified = laws.moe_identified;
    law.expansion_rates = {E};
    law.loss = [k](double, double n_total, double D, double, double G) { return k.predict(n_total, D, G); };
    law.flops_optimal = [k, E, granularities, flops](double F) {
      const OptimalConfig c = optimal_config(k, E, granularities, F, flops);
      return PlanLaw::FlopsOptimum{E, c.G, c.n_blocks, c.D, c.loss};
    };
  }

  // The budget in GPU-hours; with --flops, what the FLOPs-optimal run costs here.
  const int fixed_nodes = vm.count("nodes") ? vm["nodes"].as<int>() : 0;
  double gpu_hours = 0, flops_budget = 0;
  PlanChoice flops_choice;
  const int gpn = std::max(1, machine.gpus_per_node);
  const auto cost_flops_optimum = [&](double F) {
    const PlanLaw::FlopsOptimum o = law.flops_optimal(F);
    return cost_on_machine(law, machine, search, o.E, o.G, o.n_blocks, o.D, fixed_nodes);
  };
  if (vm.count("flops") + vm.count("gpu-hours") + vm.count("hours") != 1) {
    throw InputError("plan: give one budget: --gpu-hours H, --nodes N --hours T, or --flops F");
  }
  if (vm.count("hours") && !fixed_nodes) throw InputError("plan: --hours needs --nodes");
  if (fixed_nodes < 0) throw InputError("plan: --nodes must be positive");
  if (vm.count("flops")) {
    flops_budget = vm["flops"].as<double>();
    if (!(flops_budget > 0)) throw InputError("plan: --flops must be positive");
    flops_choice = cost_flops_optimum(flops_budget);
    if (!flops_choice.feasible) {
      throw InputError("plan: the FLOPs-optimal model at " + human(flops_budget) +
                       " FLOPs fits on no node count searched (--max-nodes); give --gpu-hours instead");
    }
    gpu_hours = flops_choice.gpu_hours;
  } else {
    gpu_hours = vm.count("gpu-hours") ? vm["gpu-hours"].as<double>() : fixed_nodes * gpn * vm["hours"].as<double>();
    if (!(gpu_hours > 0)) throw InputError("plan: the budget must be positive");
  }
  const PlanChoice best = wallclock_optimal(law, machine, search, gpu_hours, fixed_nodes);
  if (!best.feasible) {
    throw InputError("plan: no model of the search fits " + alloc_path + " within " + human(gpu_hours) +
                     " GPU-hours (memory per GPU, at least one step)");
  }
  if (!vm.count("flops")) {
    flops_budget = best.flops;
    flops_choice = cost_flops_optimum(flops_budget);
  }

  std::ostream& os = std::cout;
  if (!alloc.hardware.present) {
    os << "WARNING: " << alloc_path << " has no [hardware] section: peak, memory and link bandwidths are the H100 "
          "planning defaults (docs/performance.md), not this machine's\n";
  }
  if (!law.identified) {
    os << "WARNING: the law is not identified by its runs (identifiability flags in the fit): the plan below is an "
          "EXTRAPOLATION, not a prediction\n";
  }
  os << "plan on " << alloc.name << " (" << alloc_path << "), " << human(gpu_hours) << " GPU-hours"
     << (fixed_nodes ? " on " + std::to_string(fixed_nodes) + " node(s)" : std::string()) << "; law: " << law.source
     << "\n\n";
  print_choice(os, "wall-clock optimum (lowest predicted loss for these GPU-hours on this machine):", best);
  os << "\n";
  print_choice(os, ("FLOPs optimum at " + human(flops_budget) +
                    " FLOPs (Eq. 10, the paper's method), costed on this machine:").c_str(),
               flops_choice);
  os << "\nwhy they differ:\n";
  for (const std::string& why : explain_difference(best, flops_choice, machine)) os << "  - " << why << "\n";
  os << "\nconstants and where they come from:\n";
  char line[600];
  const std::map<std::string, double> values = {
      {"peak", machine.peak}, {"mem_bytes", machine.mem_bytes}, {"dense_eff", machine.dense_eff},
      {"overhead", machine.overhead}, {"act_bytes", machine.act_bytes}, {"grad_bytes", machine.grad_bytes},
      {"state_bytes_per_param", machine.state_bytes_per_param}, {"nv_alpha", machine.nv_alpha},
      {"nv_beta", machine.nv_beta}, {"ib_alpha", machine.ib_alpha}, {"ib_beta", machine.ib_beta},
      {"gpus_per_node", double(machine.gpus_per_node)}, {"memory_fraction", machine.memory_fraction}};
  for (const auto& [name, source] : machine.provenance) {
    std::string value;
    if (name == "expert_eff") {
      for (const auto& [de, e] : machine.expert_eff) value += (value.empty() ? "" : ",") + human(de) + ":" + human(e);
    } else {
      value = values.count(name) ? human(values.at(name)) : "?";
    }
    std::snprintf(line, sizeof line, "  %-22s %-14s <- %s\n", name.c_str(), value.c_str(), source.c_str());
    os << line;
  }
  std::snprintf(line, sizeof line, "  %-22s %-14s <- %s\n", "c_f, c_r", (human(flops.c_f) + ", " + human(flops.c_r)).c_str(),
                "documented default (paper Eq. 10; --c-f, --c-r)");
  os << line;
  std::snprintf(line, sizeof line, "  %-22s %-14s <- %s\n", "batch_tokens", human(search.batch_tokens).c_str(),
                vm["batch-tokens"].defaulted() ? "documented default (the paper's 0.5M)" : "command line --batch-tokens");
  os << line;
  std::snprintf(line, sizeof line, "  %-22s %-14s <- %s\n", "law", "", law.source.c_str());
  os << line;

  // The chosen run as a sweep of one point and its parameter file, validated as finemoe-sweep would.
  namespace fs = std::filesystem;
  fs::create_directories(out_dir);
  const std::string base = fs::absolute(vm["base"].as<std::string>()).string();
  const std::string sweep_path = out_dir + "/plan-sweep.ini";
  {
    std::ofstream f(sweep_path);
    f << "# Written by finemoe-analyze plan: the wall-clock-optimal run on " << alloc.name << " for " << human(gpu_hours)
      << " GPU-hours (predicted loss " << human(best.loss) << ", " << human(best.wall_hours) << " h on " << best.nodes
      << " node(s)).\n#   slurm/submit.sh " << sweep_path << " " << alloc_path << "\n";
    f << "[sweep]\nname = plan-" << alloc.name << "\n";
    f << "description = finemoe-analyze plan: wall-clock optimum, " << human(gpu_hours) << " GPU-hours\n";
    f << "base = " << base << "\n";
    f << "output = " << fs::absolute(out_dir).string() << "/runs\n";
    f << "ranks = " << best.devices << "\n";
    const int micro = std::max(256, best.devices);
    f << "set = model.d_model=" << int(best.d_model) << "\nset = model.n_blocks=" << int(best.n_blocks)
      << "\nset = model.n_heads=" << int(best.n_blocks) << "\nset = model.context=" << int(search.context)
      << "\nset = model.vocab=" << int(search.vocab) << "\n";
    if (best.E > 1) {
      f << "set = moe.enabled=true\nset = moe.expansion_rate=" << int(best.E) << "\nset = moe.granularity=" << int(best.G)
        << "\nset = parallel.expert_parallel=" << best.step.ep << "\n";
    } else {
      f << "set = moe.enabled=false\n";
    }
    f << "set = train.batch_size=" << std::lround(search.batch_tokens / search.context) << "\nset = train.micro_batch="
      << micro << "\nset = train.steps=0\nset = train.tokens=" << std::llround(best.D) << "\n";
  }
  sweep::ExpandOptions eo;
  eo.check_data_files = false;
  eo.allocation = &alloc;
  const sweep::SweepPlan plan = sweep::expand_sweep(sweep::read_sweep(sweep_path), eo);
  std::ofstream(out_dir + "/plan.ini") << plan.runs.at(0).params_text;
  os << "\nwrote " << sweep_path << " (finemoe-sweep expand / slurm/submit.sh) and " << out_dir
     << "/plan.ini (the run's parameter file)\n";
  return 0;
}

// finemoe-analyze next (docs/analysis.md, "The next runs to make").
int run_next_command(const po::variables_map& vm, const std::string& out_dir) {
  if (!vm.count("inputs")) throw InputError("next: give the run records so far (files, directories or globs)");
  if (!vm.count("budget") || !vm.count("target")) throw InputError("next: --budget and --target are required");
  FitOptions fo;
  fo.preset = parse_fit_preset(vm["preset"].as<std::string>());
  fo.bootstrap = vm["bootstrap"].as<int>();
  fo.kfold = 0;
  fo.seed = vm["seed"].as<uint64_t>();
  fo.threads = vm["threads"].as<int>();
  fo.c_min = vm["c-min"].as<double>();
  if (fo.bootstrap < 0) throw InputError("--bootstrap must be >= 0");
  const std::vector<std::string> paths = expand_inputs(vm["inputs"].as<std::vector<std::string>>());
  const RunSet set = load_runs(paths, parse_loss_source(vm["loss"].as<std::string>()));
  for (const auto& s : set.skipped) std::cerr << "left out " << s.path << ": " << s.state << ": " << s.reason << "\n";
  const FitResult fit = fit_law(set.moe, fo);
  const double E = double(fit.E);

  NextOptions o;
  o.budget = vm["budget"].as<double>();
  o.target = vm["target"].as<double>();
  o.max_g = vm["max-g"].as<double>();
  o.flops.c_f = vm["c-f"].as<double>();
  o.flops.c_r = vm["c-r"].as<double>();
  o.flops.min_tokens = vm["min-tokens"].as<double>();
  o.n_blocks_grid = parse_positive_list(vm["blocks-grid"].as<std::string>(), "--blocks-grid");
  o.d_per_block = vm["d-per-block"].as<double>();
  const double head_dim = vm["head-dim"].as<double>();
  if (!(o.d_per_block >= 1 && head_dim >= 1)) throw InputError("--d-per-block and --head-dim must be at least 1");
  const std::vector<double> tokens = parse_positive_list(vm["tokens-grid"].as<std::string>(), "--tokens-grid");
  if (tokens.size() != 2 || !(tokens[1] >= tokens[0])) throw InputError("--tokens-grid: expected MIN,MAX with MIN <= MAX");
  o.token_grid.clear();
  for (double t = tokens[0]; t <= tokens[1] * (1 + 1e-9); t *= 2) o.token_grid.push_back(t);
  const int ranks = vm["ranks"].as<int>();
  if (ranks < 1) throw InputError("--ranks must be at least 1");
  o.max_runs = vm["max-runs"].as<int>();
  if (o.max_runs < 1) throw InputError("--max-runs must be at least 1");

  std::string unit = "FLOPs (Eq. 10)";
  std::function<double(const NextCandidate&)> cost = [&](const NextCandidate& c) { return candidate_flops(c, E, o.flops); };
  std::optional<sweep::Allocation> alloc;
  perf::Machine machine;
  PlanSearch search;
  if (vm.count("allocation")) {
    alloc = sweep::read_allocation(vm["allocation"].as<std::string>());
    perf::apply_allocation(machine, *alloc);
    PlanLaw law;
    law.loss = [](double, double, double, double, double) { return 0.0; };
    unit = "GPU-hours on " + alloc->name + " (finemoe_perf)";
    cost = [&machine, &search, E, law](const NextCandidate& c) {
      const PlanChoice p = cost_on_machine(law, machine, search, E, c.G, c.n_blocks, c.D);
      return p.feasible ? p.gpu_hours : -1.0;
    };
  }
  const NextProposal prop = propose_next_runs(fit.coefficients, E, set.moe, fit.rmse, o, cost);

  std::ostream& os = std::cout;
  if (!fit.identified()) {
    os << "the fit of the " << set.moe.size() << " runs raises " << fit.flags.size()
       << " identifiability flag(s): the optimum below is an EXTRAPOLATION; the proposal targets what the runs do "
          "not determine\n";
  }
  os << "target " << human(o.target) << " FLOPs: G* = " << human(std::exp2(prop.log2_G_star)) << " (log2 " << human(prop.log2_G_star)
     << "), optimal loss " << human(prop.loss_star) << "\n";
  os << "criterion: delta-method variance of log2 G* plus that of L* (each relative to its value now) per unit of "
        "cost + a per-run overhead of budget / (4 max-runs); "
        "sd(log2 G*) "
     << human(prop.sd_log2_G_before) << " -> " << human(prop.sd_log2_G_after) << ", sd(L*) " << human(prop.sd_loss_before)
     << " -> " << human(prop.sd_loss_after) << " (linearised prediction)\n";
  os << prop.runs.size() << " runs, " << human(prop.spent) << " of " << human(o.budget) << " " << unit << ":\n";
  char line[200];
  for (const NextCandidate& c : prop.runs) {
    std::snprintf(line, sizeof line, "  d_model %4.0f  n_blocks %3.0f  G %3.0f  D %10.4g  cost %10.4g  gain %.3g\n",
                  c.d_model, c.n_blocks, c.G, c.D, c.cost, c.gain);
    os << line;
  }
  if (prop.runs.empty()) throw InputError("next: no candidate run fits the budget " + human(o.budget) + " " + unit);

  namespace fs = std::filesystem;
  fs::create_directories(out_dir);
  const std::string sweep_path = out_dir + "/next-sweep.ini";
  {
    std::ofstream f(sweep_path);
    f << "# Written by finemoe-analyze next: " << prop.runs.size() << " runs that most shrink the uncertainty of G* at "
      << human(o.target) << " FLOPs per unit cost (" << unit << "), " << human(prop.spent) << " in all.\n";
    f << "[sweep]\nname = next\ndescription = finemoe-analyze next, target " << human(o.target) << " FLOPs\n";
    f << "base = " << fs::absolute(vm["base"].as<std::string>()).string() << "\n";
    f << "output = " << fs::absolute(out_dir).string() << "/runs\nranks = " << ranks << "\n";
    if (vm.count("set"))
      for (const std::string& kv : vm["set"].as<std::vector<std::string>>()) f << "set = " << kv << "\n";
    f << "set = moe.enabled=true\nset = moe.expansion_rate=" << int(E) << "\n\n[axis run]\n";
    for (const NextCandidate& c : prop.runs) {
      const long experts = std::lround(E * c.G);
      int ep = 1;
      while (ep * 2 <= ranks && ranks % (ep * 2) == 0 && experts % (ep * 2) == 0) ep *= 2;
      char label[96];
      std::snprintf(label, sizeof label, "d%.0fx%.0f-G%.0f-D%.0fk", c.d_model, c.n_blocks, c.G, c.D / 1e3);
      const int d = int(c.d_model);
      const int heads = d % int(head_dim) == 0 ? std::max(1, d / int(head_dim)) : 1;
      f << "point = " << label << ": model.d_model=" << d << " model.n_blocks=" << int(c.n_blocks)
        << " model.n_heads=" << heads << " moe.granularity=" << int(c.G) << " train.steps=0 train.tokens=" << std::llround(c.D)
        << " parallel.expert_parallel=" << ep << "\n";
    }
  }
  sweep::ExpandOptions eo;
  eo.check_data_files = false;
  if (alloc) eo.allocation = &*alloc;
  sweep::expand_sweep(sweep::read_sweep(sweep_path), eo);  // validated as finemoe-sweep would
  os << "wrote " << sweep_path << " (finemoe-sweep expand / slurm/submit.sh)\n";
  return 0;
}

int run(int argc, char** argv) {
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h") {
    std::cout << kUsage;
    return argc < 2 ? 2 : 0;
  }
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
    return 0;
  }
  const std::string out_dir = vm["out"].as<std::string>();
  const bool json = vm.count("json") > 0;

  const std::string law_kind = vm["law"].as<std::string>();
  if (law_kind != "fine-grained" && law_kind != "joint") {
    throw InputError("--law: '" + law_kind + "' is not fine-grained or joint");
  }
  const bool joint = law_kind == "joint";
  ExpertTransform transform{vm["e-start"].as<double>(), vm["e-max"].as<double>()};
  if (!(transform.e_start >= 1 && transform.e_max > transform.e_start)) {
    throw InputError("--e-start must be >= 1 and --e-max above it");
  }
  const std::string joint_form = vm["joint-form"].as<std::string>();
  if (joint_form != "fine-grained" && joint_form != "published") {
    throw InputError("--joint-form: '" + joint_form + "' is not fine-grained or published");
  }

  if (command == "fit" && joint) {
    if (!vm.count("inputs")) throw InputError("fit: give run records, directories or globs\n" + std::string(kUsage));
    JointFitOptions options;
    options.preset = parse_fit_preset(vm["preset"].as<std::string>());
    options.fine_grained = joint_form == "fine-grained";
    options.transform = transform;
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

  if (command == "next") return run_next_command(vm, out_dir);
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
  const std::vector<double> budgets =
      parse_positive_list(vm["budgets"].as<std::string>(), "--budgets", "FLOPs", "no budgets given");

  if (command == "plan") return run_plan_command(vm, joint, joint_form == "fine-grained", flops, granularities, out_dir);

  if (joint) {
    if (command != "optimal") throw InputError("--law joint: only fit, optimal and plan take the joint law");
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
    search.flops = flops;
    search.granularities = granularities;
    const double max_e = vm["max-e"].as<double>();
    if (!(max_e >= 1)) throw InputError("--max-e must be at least 1");
    search.expansion_rates = powers_of_two(max_e);
    const double mem = vm["memory-per-gpu-gb"].as<double>(), gpus = vm["gpus"].as<double>();
    const double bytes = vm["bytes-per-param"].as<double>();
    if (!(mem >= 0 && gpus >= 1 && bytes > 0)) {
      throw InputError("--memory-per-gpu-gb must be >= 0, --gpus >= 1 and --bytes-per-param > 0");
    }
    if (mem > 0) search.max_total_params = report.max_total_params = mem * 1e9 * gpus / bytes;
    for (double budget : budgets) report.rows.push_back(joint_optimal_row(law, budget, search, bootstrap));
    write_joint_optimal_csv(out_dir, report);
    print_joint_optimal_table(std::cout, report);
    return 0;
  }
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
