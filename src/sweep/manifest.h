#pragma once
// The sweep's manifest (<output>/manifest.txt): one line per run, which slurm/sweep.sbatch reads by
// array index, and the files written next to it for the batch scripts.
//
//   # finemoe-sweep manifest 1
//   # sweep tiny-cpu inputs/sweeps/tiny-cpu.ini; allocation local-cpu inputs/allocations/local-cpu.ini
//   # index name params output_dir ranks nodes N_total N_active D FLOPs est_hours est_node_hours
//   0 d32-G1 runs/sweeps/tiny-cpu/params/d32-G1.ini runs/sweeps/tiny-cpu/d32-G1 2 1 24576 8192 1228800 1.9e+11 0.0013 0.0013
//   # total 8 runs, FLOPs 1.6e+12, est. node-hours 0.011
//
// Fields are separated by single spaces; paths hold no spaces. est_* are -1 without an allocation.
#include <string>
#include <vector>

#include "sweep/allocation.h"
#include "sweep/expand.h"

namespace finemoe::sweep {

struct ManifestEntry {
  int index = 0;
  std::string name, params, output_dir;
  int ranks = 0, nodes = 0;
  long long n_total = 0, n_active = 0, tokens = 0;
  double flops = 0, est_hours = -1, est_node_hours = -1;
};

std::string manifest_text(const SweepPlan& plan, const Allocation* allocation);
std::vector<ManifestEntry> parse_manifest(const std::string& text, const std::string& origin);
std::vector<ManifestEntry> read_manifest(const std::string& path);

// `KEY='value'` lines for slurm/submit.sh: the sweep's sizes and the allocation's settings.
std::string slurm_env_text(const SweepPlan& plan, const Allocation& allocation, const std::string& manifest_path,
                           const std::string& setup_path);
// The allocation's module and setup lines as a script the batch scripts source.
std::string setup_script_text(const Allocation& allocation);

// Writes every run's parameter file. An existing file with different content means the sweep
// changed after it was expanded (runs may already use it): InputError naming it, unless `force`.
// Returns how many files were new or changed.
int write_parameter_files(const SweepPlan& plan, bool force);
// Writes `text` to `path` (creating folders) through a temporary file and a rename.
void write_file(const std::string& path, const std::string& text);

}  // namespace finemoe::sweep
