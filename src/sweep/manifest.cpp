#include "sweep/manifest.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "sweep/ini_file.h"
#include "util/check.h"

namespace fs = std::filesystem;

namespace finemoe::sweep {
namespace {

std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

}  // namespace

std::string manifest_text(const SweepPlan& plan, const Allocation* allocation) {
  std::ostringstream os;
  os << "# finemoe-sweep manifest 1\n# sweep " << plan.definition.name << " " << plan.definition.file;
  if (allocation) os << "; allocation " << allocation->name << " " << allocation->file;
  os << "\n# index name params output_dir ranks nodes N_total N_active D FLOPs est_hours est_node_hours\n";
  for (const auto& r : plan.runs) {
    for (const auto* path : {&r.params_path, &r.output_dir})
      if (path->find_first_of(" \t\n") != std::string::npos)
        throw InputError(plan.definition.file + ": run '" + r.name + "': path '" + *path + "' holds white space");
    os << r.index << " " << r.name << " " << r.params_path << " " << r.output_dir << " " << r.ranks << " " << r.nodes
       << " " << r.counts.n_total() << " " << r.counts.n_active() << " " << r.tokens << " " << num(r.flops) << " "
       << num(r.est_hours) << " " << num(r.est_node_hours) << "\n";
  }
  os << "# total " << plan.runs.size() << " runs, FLOPs " << num(plan.total_flops) << ", est. node-hours "
     << num(plan.total_node_hours) << "\n";
  return os.str();
}

std::vector<ManifestEntry> parse_manifest(const std::string& text, const std::string& origin) {
  std::vector<ManifestEntry> out;
  std::istringstream in(text);
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    ++n;
    if (trim(line).empty() || trim(line)[0] == '#') continue;
    std::istringstream ls(line);
    ManifestEntry e;
    std::string extra;
    if (!(ls >> e.index >> e.name >> e.params >> e.output_dir >> e.ranks >> e.nodes >> e.n_total >> e.n_active >>
          e.tokens >> e.flops >> e.est_hours >> e.est_node_hours) ||
        (ls >> extra))
      throw InputError(origin + ":" + std::to_string(n) + ": not a manifest line (12 fields expected): '" + line + "'");
    if (e.index != int(out.size()))
      throw InputError(origin + ":" + std::to_string(n) + ": index " + std::to_string(e.index) + ", expected " +
                       std::to_string(out.size()));
    out.push_back(e);
  }
  return out;
}

std::vector<ManifestEntry> read_manifest(const std::string& path) { return parse_manifest(read_text_file(path), path); }

std::string setup_script_text(const Allocation& a) {
  std::ostringstream os;
  os << "# Environment for finemoe runs on allocation '" << a.name << "' (" << a.file << "), sourced by slurm/*.sbatch.\n";
  for (const auto& m : a.modules) os << "module load " << m << "\n";
  for (const auto& s : a.setup) os << s << "\n";
  return os.str();
}

std::string slurm_env_text(const SweepPlan& plan, const Allocation& a, const std::string& manifest_path,
                           const std::string& setup_path) {
  int ranks = 0, nodes = 0;
  double max_hours = 0;
  for (const auto& r : plan.runs) {
    ranks = std::max(ranks, r.ranks);
    nodes = std::max(nodes, r.nodes);
    max_hours = std::max(max_hours, r.est_hours);
  }
  const int ranks_per_node = (ranks + nodes - 1) / std::max(nodes, 1);
  std::ostringstream os;
  auto kv = [&](const char* key, const std::string& value) { os << key << "=" << shell_quote(value) << "\n"; };
  os << "# Written by finemoe-sweep for slurm/submit.sh; sourced by bash.\n";
  kv("FINEMOE_SWEEP_NAME", plan.definition.name);
  kv("FINEMOE_SWEEP_FILE", plan.definition.file);
  kv("FINEMOE_SWEEP_OUTPUT", plan.output);
  kv("FINEMOE_MANIFEST", manifest_path);
  kv("FINEMOE_RUNS", std::to_string(plan.runs.size()));
  kv("FINEMOE_NODES_PER_RUN", std::to_string(nodes));
  kv("FINEMOE_RANKS_PER_RUN", std::to_string(ranks));
  kv("FINEMOE_RANKS_PER_NODE", std::to_string(ranks_per_node));
  kv("FINEMOE_ALLOCATION", a.name);
  kv("FINEMOE_ACCOUNT", a.account);
  kv("FINEMOE_PARTITION", a.partition);
  kv("FINEMOE_QOS", a.qos);
  kv("FINEMOE_CONSTRAINT", a.constraint);
  kv("FINEMOE_GPUS_PER_NODE", std::to_string(a.gpus_per_node));
  kv("FINEMOE_CPUS_PER_RANK", std::to_string(a.cpus_per_rank()));
  kv("FINEMOE_MEM_PER_NODE_MB", std::to_string(a.memory_per_node_mb));
  kv("FINEMOE_TIME_LIMIT", a.time_limit);
  kv("FINEMOE_SIGNAL_WARNING_S", std::to_string(a.signal_warning_s));
  kv("FINEMOE_ARRAY_THROTTLE", std::to_string(a.array_throttle));
  kv("FINEMOE_LAUNCHER", a.launcher);
  kv("FINEMOE_SRUN_MPI", a.srun_mpi);
  kv("FINEMOE_SETUP", setup_path);
  kv("FINEMOE_ANALYSIS_TIME_LIMIT", a.analysis_time_limit);
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.4g", plan.total_node_hours);
  kv("FINEMOE_EST_NODE_HOURS", buf);
  std::snprintf(buf, sizeof buf, "%.4g", max_hours);
  kv("FINEMOE_EST_MAX_RUN_HOURS", buf);
  return os.str();
}

void write_file(const std::string& path, const std::string& text) {
  const fs::path p = path;
  if (p.has_parent_path()) fs::create_directories(p.parent_path());
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << text;
    out.flush();
    if (!out) throw InputError("error: cannot write '" + tmp + "'");
  }
  fs::rename(tmp, path);
}

int write_parameter_files(const SweepPlan& plan, bool force) {
  // Check all first, so a refusal leaves nothing half-written.
  for (const auto& r : plan.runs) {
    if (!fs::exists(r.params_path) || force) continue;
    if (read_text_file(r.params_path) != r.params_text)
      throw InputError(plan.definition.file + ": run '" + r.name + "': " + r.params_path +
                       " exists with different parameters (the sweep changed after it was expanded, and the run may "
                       "already have used it); remove it, choose another output, or pass --force");
  }
  int written = 0;
  for (const auto& r : plan.runs) {
    if (fs::exists(r.params_path) && read_text_file(r.params_path) == r.params_text) continue;
    write_file(r.params_path, r.params_text);
    ++written;
  }
  return written;
}

}  // namespace finemoe::sweep
