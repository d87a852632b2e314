// finemoe-analyze next (docs/analysis.md, "The next runs to make"): the runs that most shrink the
// uncertainty of the optimal G at a target budget per unit of cost, as a sweep.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <optional>

#include "cli.h"
#include "next.h"
#include "perf/calibration.h"
#include "plan.h"
#include "runs.h"
#include "sweep/allocation.h"
#include "sweep/expand.h"
#include "sweep/sweep_definition.h"
#include "util/check.h"

namespace finemoe::analysis::cli {

int run_next_command(const CommandLine& cli) {
  const po::variables_map& vm = cli.vm;
  const std::string& out_dir = cli.out_dir;
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

}  // namespace finemoe::analysis::cli
