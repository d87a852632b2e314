#pragma once
// Expanding a sweep definition into runs: every point's parameters resolved, parsed and validated
// exactly as finemoe-train would (parse_config_text + validate_config), duplicates rejected, and
// each run's size and cost counted from the registered model (as --dry-run does).
#include <cstdint>
#include <string>
#include <vector>

#include "config/config.h"
#include "model/model_counts.h"
#include "sweep/allocation.h"
#include "sweep/sweep_definition.h"

namespace finemoe::sweep {

struct ExpandOptions {
  std::vector<Override> cli_set;  // finemoe-sweep --set, applied last
  // --select AXIS=L1,L2: only these points of that axis.
  std::vector<std::pair<std::string, std::vector<std::string>>> select;
  std::string name_format;  // overrides the sweep's name_format
  std::string params_dir;   // default <output>/params
  std::string output;       // overrides the sweep's output folder
  bool check_data_files = true;
  bool cuda_available = true;  // runs are validated for the machine they will run on
  const Allocation* allocation = nullptr;  // cost estimates and [parameters]
};

struct SweepRun {
  int index = 0;
  std::string name;
  std::vector<std::string> labels;  // one per axis, in axis order
  Config config;
  std::string params_text;  // the resolved parameter file (config_to_ini) with a header
  std::string params_path;
  std::string output_dir;
  int ranks = 1;
  int nodes = 1;
  ModelCounts counts;
  int64_t tokens = 0;  // D actually trained: steps x batch x context
  double flops = 0;    // the paper's Eq. 10 over D
  double est_hours = -1;       // wall clock, from the allocation's throughput (-1: no allocation)
  double est_node_hours = -1;
};

struct SweepPlan {
  SweepDefinition definition;
  std::string output;
  std::string params_dir;
  std::vector<std::string> axis_names;
  std::vector<SweepRun> runs;
  double total_flops = 0;
  double total_node_hours = -1;
};

// Throws InputError naming the sweep file, the run, the axis point and the key on any invalid or
// duplicate point; nothing is written.
SweepPlan expand_sweep(const SweepDefinition& def, const ExpandOptions& opts);

// Parameter counts of the model a configuration describes, from its registered tensors (no
// parameter memory is allocated), with the expert-parallel layout of the configuration.
ModelCounts model_counts(const Config& cfg);

}  // namespace finemoe::sweep
