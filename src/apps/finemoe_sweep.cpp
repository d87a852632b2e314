// finemoe-sweep: expands a sweep definition into resolved parameter files and a manifest for
// slurm/sweep.sbatch, with each run's size and cost; and reports the state of a sweep's records.
#include <boost/program_options.hpp>
#include <cstdio>
#include <filesystem>
#include <iostream>

#include "io/run_record.h"
#include "sweep/allocation.h"
#include "sweep/expand.h"
#include "sweep/ini_file.h"
#include "sweep/manifest.h"
#include "util/check.h"

namespace po = boost::program_options;
namespace fs = std::filesystem;
using namespace finemoe;
using namespace finemoe::sweep;

namespace {

constexpr int kExitOk = 0, kExitBadInput = 2, kExitNotComplete = 3;

const char* kUsage =
    "usage: finemoe-sweep expand SWEEP.ini [--allocation ALLOC.ini] [options]\n"
    "       finemoe-sweep status MANIFEST | --record RECORD.h5 [--quiet]\n\n"
    "expand: resolves every run of the sweep (base parameter file, allocation [parameters], [sweep] set,\n"
    "  axes, --set), validates each as finemoe-train would, rejects duplicates, counts N and FLOPs from\n"
    "  the registered model, estimates hours from the allocation's throughput, and writes\n"
    "  <params-dir>/<run>.ini, the manifest, and (with an allocation) slurm.env and setup.sh next to it.\n"
    "status: the state of each run's record (completed, incomplete, failed, missing, ...); exit 0 when\n"
    "  all are completed, 3 otherwise.\n"
    "Exit codes: 0 ok, 2 bad input (nothing written), 3 not all runs completed (status).\n";

std::string fmt(double v, const char* f = "%.3g") {
  if (v < 0) return "-";
  char buf[32];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

std::string count(double v) {
  const char* units[] = {"", "K", "M", "B", "T"};
  int u = 0;
  while (v >= 1000 && u < 4) v /= 1000, ++u;
  char buf[32];
  std::snprintf(buf, sizeof buf, v < 10 && u > 0 ? "%.2f%s" : "%.3g%s", v, units[u]);
  return buf;
}

int expand_command(const std::vector<std::string>& args) {
  po::options_description desc("expand options");
  std::vector<std::string> sets, selects;
  desc.add_options()("help,h", "this help")("sweep", po::value<std::string>(), "sweep definition (positional)")(
      "allocation,a", po::value<std::string>(), "allocation file: cost estimates, [parameters], slurm.env")(
      "set", po::value<std::vector<std::string>>(&sets), "section.key=value for every run (repeatable; applied last)")(
      "select", po::value<std::vector<std::string>>(&selects), "AXIS=P1,P2: only these points of an axis (repeatable)")(
      "name-format", po::value<std::string>(), "run names, e.g. '{shape}-{ffn}' (axis names in braces)")(
      "output", po::value<std::string>(), "folder of the runs (default: the sweep's output)")(
      "params-dir", po::value<std::string>(), "where the parameter files go (default: <output>/params)")(
      "manifest", po::value<std::string>(), "manifest path (default: <output>/manifest.txt; 'none' to skip)")(
      "no-data-check", "do not require data.train and data.val to exist here")(
      "check", "validate and print the plan; write nothing")(
      "force", "overwrite parameter files that differ from the sweep")("quiet,q", "no table");
  po::positional_options_description pos;
  pos.add("sweep", 1);
  po::variables_map vm;
  po::store(po::command_line_parser(args)
                .options(desc)
                .positional(pos)
                .style(po::command_line_style::default_style & ~po::command_line_style::allow_guessing)
                .run(),
            vm);
  po::notify(vm);
  if (vm.count("help")) {
    std::cout << kUsage << "\n" << desc;
    return kExitOk;
  }
  if (!vm.count("sweep")) throw InputError("error: expand needs a sweep definition (finemoe-sweep expand SWEEP.ini)");
  const std::string sweep_file = vm["sweep"].as<std::string>();
  if (!fs::exists(sweep_file)) throw InputError("error: sweep definition '" + sweep_file + "' not found");

  ExpandOptions opts;
  Allocation alloc;
  if (vm.count("allocation")) {
    const std::string path = vm["allocation"].as<std::string>();
    if (!fs::exists(path)) throw InputError("error: allocation file '" + path + "' not found");
    alloc = read_allocation(path);
    opts.allocation = &alloc;
  }
  for (const auto& s : sets) opts.cli_set.push_back(parse_override(s, "--set"));
  for (const auto& s : selects) {
    const auto eq = s.find('=');
    if (eq == std::string::npos || eq == 0)
      throw InputError("error: --select '" + s + "' is invalid: expected AXIS=POINT[,POINT...]");
    opts.select.emplace_back(s.substr(0, eq), split_list(s.substr(eq + 1)));
  }
  if (vm.count("name-format")) opts.name_format = vm["name-format"].as<std::string>();
  if (vm.count("output")) opts.output = vm["output"].as<std::string>();
  if (vm.count("params-dir")) opts.params_dir = vm["params-dir"].as<std::string>();
  opts.check_data_files = !vm.count("no-data-check");

  const SweepDefinition def = read_sweep(sweep_file);
  const SweepPlan plan = expand_sweep(def, opts);

  if (!vm.count("quiet")) {
    std::printf("sweep %s (%s): %zu runs, %d ranks each, base %s\n", def.name.c_str(), def.file.c_str(),
                plan.runs.size(), def.ranks, def.base.c_str());
    std::printf("%5s  %-28s %9s %9s %9s %10s %9s %10s\n", "index", "name", "N_total", "N_active", "D", "FLOPs",
                "est_h", "node_h");
    for (const auto& r : plan.runs)
      std::printf("%5d  %-28s %9s %9s %9s %10s %9s %10s\n", r.index, r.name.c_str(),
                  count(double(r.counts.n_total())).c_str(), count(double(r.counts.n_active())).c_str(),
                  count(double(r.tokens)).c_str(), fmt(r.flops).c_str(), fmt(r.est_hours).c_str(),
                  fmt(r.est_node_hours).c_str());
    std::printf("total: %zu runs, FLOPs %s", plan.runs.size(), fmt(plan.total_flops).c_str());
    if (opts.allocation) {
      double longest = 0;
      for (const auto& r : plan.runs) longest = std::max(longest, r.est_hours);
      const double limit_h = double(alloc.time_limit_s) / 3600.0;
      std::printf(", est. %s node-hours on %s (%.3g model FLOP/s per rank); longest run %s h", fmt(plan.total_node_hours).c_str(),
                  alloc.name.c_str(), alloc.model_flops_per_s_per_rank, fmt(longest).c_str());
      if (longest > limit_h)
        std::printf(" > time limit %s: runs that long are checkpointed and requeued (about %d jobs each)",
                    alloc.time_limit.c_str(), int(longest / limit_h) + 1);
    } else {
      std::printf(" (no --allocation: no time estimates)");
    }
    std::printf("\n");
  }
  if (vm.count("check")) return kExitOk;

  const int written = write_parameter_files(plan, vm.count("force") > 0);
  std::string manifest = (fs::path(plan.output) / "manifest.txt").string();
  if (vm.count("manifest")) manifest = vm["manifest"].as<std::string>();
  if (manifest != "none") {
    write_file(manifest, manifest_text(plan, opts.allocation));
    if (opts.allocation) {
      const std::string dir = fs::path(manifest).parent_path().string();
      const std::string setup = (fs::path(dir.empty() ? "." : dir) / "setup.sh").string();
      write_file(setup, setup_script_text(alloc));
      write_file((fs::path(dir.empty() ? "." : dir) / "slurm.env").string(),
                 slurm_env_text(plan, alloc, manifest, setup));
    }
  }
  if (!vm.count("quiet"))
    std::printf("wrote %d parameter files (%zu unchanged) in %s%s%s\n", written, plan.runs.size() - size_t(written),
                plan.params_dir.c_str(), manifest != "none" ? ", manifest " : "",
                manifest != "none" ? manifest.c_str() : "");
  return kExitOk;
}

std::string record_state(const std::string& path, std::string* reason) {
  if (!fs::exists(path)) return "missing";
  const RecordCheck c = RunRecordReader::classify(path);
  if (reason) *reason = c.reason;
  return to_string(c.state);
}

int status_command(const std::vector<std::string>& args) {
  po::options_description desc("status options");
  desc.add_options()("help,h", "this help")("manifest", po::value<std::string>(), "manifest (positional)")(
      "record", po::value<std::string>(), "one record instead of a manifest")("quiet,q", "state words only");
  po::positional_options_description pos;
  pos.add("manifest", 1);
  po::variables_map vm;
  po::store(po::command_line_parser(args).options(desc).positional(pos).run(), vm);
  po::notify(vm);
  if (vm.count("help")) {
    std::cout << kUsage << "\n" << desc;
    return kExitOk;
  }
  const bool quiet = vm.count("quiet") > 0;
  if (vm.count("record")) {
    std::string reason;
    const std::string state = record_state(vm["record"].as<std::string>(), &reason);
    std::cout << state << (quiet || reason.empty() ? "" : ": " + reason) << "\n";
    return state == "completed" ? kExitOk : kExitNotComplete;
  }
  if (!vm.count("manifest")) throw InputError("error: status needs a manifest or --record FILE");
  const std::string path = vm["manifest"].as<std::string>();
  if (!fs::exists(path)) throw InputError("error: manifest '" + path + "' not found");
  int completed = 0;
  const auto entries = read_manifest(path);
  for (const auto& e : entries) {
    std::string reason;
    const std::string state = record_state((fs::path(e.output_dir) / "record.h5").string(), &reason);
    completed += state == "completed";
    if (quiet) std::cout << e.index << " " << state << "\n";
    else std::printf("%5d  %-28s %-12s %s\n", e.index, e.name.c_str(), state.c_str(), reason.c_str());
  }
  if (!quiet) std::printf("%d of %zu runs completed\n", completed, entries.size());
  return completed == int(entries.size()) ? kExitOk : kExitNotComplete;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  try {
    if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
      std::cout << kUsage;
      return args.empty() ? kExitBadInput : kExitOk;
    }
    const std::string command = args[0];
    args.erase(args.begin());
    if (command == "expand") return expand_command(args);
    if (command == "status") return status_command(args);
    throw InputError("error: unknown command '" + command + "' (expand | status; --help)");
  } catch (const InputError& e) {
    std::cerr << "finemoe-sweep: " << e.what() << std::endl;
    return kExitBadInput;
  } catch (const po::error& e) {
    std::cerr << "finemoe-sweep: error on the command line: " << e.what() << " (--help lists the options)" << std::endl;
    return kExitBadInput;
  } catch (const std::exception& e) {
    std::cerr << "finemoe-sweep: fatal: " << e.what() << std::endl;
    return 1;
  }
}
