#pragma once
// An allocation file (inputs/allocations/*.ini): where and how runs are submitted, and the
// throughput figure behind the cost estimates.
//
//   [allocation]
//   name = generic-4gpu          # for people and job names
//   account = myproject          # sbatch --account (empty: none)
//   partition = gpu              # sbatch --partition (empty: the cluster's default)
//   qos =                        # sbatch --qos (optional)
//   constraint =                 # sbatch --constraint (optional)
//   gpus_per_node = 4            # 0 for CPU nodes
//   cores_per_node = 64
//   ranks_per_node = 4           # MPI ranks per node (default: gpus_per_node, or 2 without GPUs)
//   memory_per_node = 0          # sbatch --mem in MB (0: all of the node)
//   time_limit = 24:00:00        # per job; longer runs are requeued after a checkpoint
//   signal_warning_s = 300       # --signal=B:USR1@<s>: time to write a checkpoint
//   array_throttle = 16          # at most this many runs of a sweep at once (--array=...%K)
//   launcher = srun              # srun | mpirun
//   srun_mpi = pmix              # srun --mpi=<this>
//   module = gcc/12.2            # repeated: `module load` lines, in order
//   setup = source /path/env.sh  # repeated: further shell lines before the launch
//   analysis_time_limit = 01:00:00
//   [throughput]
//   model_flops_per_s_per_rank = 1.0e14   # sustained, in the paper's FLOPs model (Eq. 10)
//   [parameters]
//   train.device = cuda          # applied to every run on this allocation
//   [hardware]                   # optional: what the planner's performance model starts from
//   gpu = H100-SXM5-80GB         # model name (letters, digits, _ - .)
//   gpu_memory_gb = 80           # per GPU
//   gpu_peak_tflops = 989        # dense bf16 peak per GPU (no sparsity)
//   nvlink_gbps = 450            # GPU-to-GPU inside a node, GB/s per GPU per direction (peak)
//   network_gbps = 50            # between nodes, GB/s per GPU per direction (peak injection)
//   network = ib-ndr400          # fabric name
//   [sources]                    # where each fact comes from; required for every [hardware] key
//   hardware.gpu_memory_gb = https://example.org/page verified 2026-12-02
//   allocation.partition = unverified: what could not be checked and why
#include <algorithm>
#include <string>
#include <utility>
#include <vector>

namespace finemoe::sweep {

// The hardware facts of [hardware]; present = false without the section.
struct Hardware {
  bool present = false;
  std::string gpu, network;
  double gpu_memory_gb = 0, gpu_peak_tflops = 0, nvlink_gbps = 0, network_gbps = 0;
};

// One [sources] line: `section.key = URL verified YYYY-MM-DD` or `section.key = unverified: note`.
struct FactSource {
  std::string key;  // e.g. "hardware.gpu_memory_gb"
  std::string url, verified_on;  // empty when unverified
  std::string unverified;        // the note of an unverified fact
};

struct Allocation {
  std::string file;
  std::string name;
  std::string account, partition, qos, constraint;
  int gpus_per_node = 0;
  int cores_per_node = 0;
  int ranks_per_node = 0;
  long memory_per_node_mb = 0;
  std::string time_limit;  // as written (Slurm syntax)
  long time_limit_s = 0;
  int signal_warning_s = 300;
  int array_throttle = 0;  // 0 = no throttle
  std::string launcher = "srun";
  std::string srun_mpi = "pmix";
  std::vector<std::string> modules;
  std::vector<std::string> setup;
  std::string analysis_time_limit = "01:00:00";
  double model_flops_per_s_per_rank = 0;
  std::vector<std::pair<std::string, std::string>> parameters;  // key, value (with origin line)
  std::vector<int> parameter_lines;
  Hardware hardware;
  std::vector<FactSource> sources;
  // The source line of a fact ("hardware.nvlink_gbps"), or nullptr.
  const FactSource* source_of(const std::string& key) const;

  int cpus_per_rank() const { return ranks_per_node > 0 ? std::max(1, cores_per_node / ranks_per_node) : 1; }
};

// Parses and checks an allocation file; InputError naming the file, line, key and what is allowed.
Allocation read_allocation(const std::string& path);
Allocation parse_allocation(const std::string& text, const std::string& origin);

// Slurm time ("MM", "MM:SS", "HH:MM:SS", "D-HH", "D-HH:MM", "D-HH:MM:SS") in seconds; -1 if malformed.
long parse_slurm_time(const std::string& t);

// Shell-quoted for a `KEY='value'` line that bash can source.
std::string shell_quote(const std::string& s);

}  // namespace finemoe::sweep
