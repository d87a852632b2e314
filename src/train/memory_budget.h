#pragma once
// One rank's memory by what holds it, from the configuration alone (no tensor is registered, so
// even absurd sizes are answered at once): the totals of model/memory_plan.h's list of every kept
// tensor, which matches the CPU allocator's measured peak. --dry-run prints it and finemoe-train
// refuses at start a run that cannot fit (host memory on the CPU, device memory on a GPU).
#include <string>

#include "config/config.h"

namespace finemoe {

// Bytes per rank, by what holds them.
struct MemoryBudget {
  double weights = 0;        // this rank's parameters: the replicated ones and its experts
  double gradients = 0;      // one gradient per parameter
  double optimizer = 0;      // AdamW's two moments per parameter
  double activations = 0;    // kept from the forward pass for the backward pass, one micro-batch
  double scratch = 0;        // transient buffers: one block's working set, the logits' gradient, the batch
  double communication = 0;  // staged rows of the expert exchange (other ranks' copies)
  double allowance = 0;      // CUDA: context, cuBLAS workspace, NCCL buffers (stated, not counted)
  double dropless_rows = 0;  // dropless token choice: the worst-case expert rows per layer (else 0)
  double total() const {
    return weights + gradients + optimizer + activations + scratch + communication + allowance;
  }
};

// The prediction for a run of `world_size` ranks in the configured EP x DP layout.
MemoryBudget predict_memory(const Config& cfg, int world_size);

// "weights 1.2 GiB, gradients ..., total 5.0 GiB"
std::string describe(const MemoryBudget& b);

// Throws InputError when the prediction exceeds `available_bytes` (the rank's share of memory:
// host memory on the CPU, device memory on a GPU; `where` says where the figure came from),
// naming the keys that size the largest parts.
void check_memory_fits(const MemoryBudget& b, double available_bytes, const std::string& where);

// Host memory this rank may use: min(MemAvailable of /proc/meminfo, the cgroup's memory.max)
// divided by the ranks on this node; a negative value when neither can be read.
double host_memory_per_rank(int ranks_on_node, std::string* where);

// Device memory this rank may use: the current device's free memory (cudaMemGetInfo) divided by
// the ranks of this node that share it; a negative value without the CUDA backend.
double device_memory_per_rank(int ranks_on_node, std::string* where);

// "1.5 GiB", "12.0 MiB"
std::string format_bytes(double bytes);

}  // namespace finemoe
