// finemoe-analyze plan (docs/analysis.md, "Hours, not FLOPs"): the wall-clock-optimal run on an
// allocation for a budget of GPU-hours beside the FLOPs-optimal one, and the sweep that makes it.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>

#include "cli.h"
#include "joint_optimal.h"
#include "joint_results.h"
#include "perf/calibration.h"
#include "plan.h"
#include "sweep/allocation.h"
#include "sweep/expand.h"
#include "sweep/sweep_definition.h"
#include "util/check.h"

namespace finemoe::analysis::cli {
namespace {

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

}  // namespace

int run_plan_command(const CommandLine& cli, const BudgetOptions& budget) {
  const po::variables_map& vm = cli.vm;
  const bool joint = cli.joint;
  const FlopsModel& flops = budget.flops;
  const std::vector<double>& granularities = budget.granularities;
  const std::string& out_dir = cli.out_dir;
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

}  // namespace finemoe::analysis::cli
