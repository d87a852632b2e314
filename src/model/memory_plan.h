#pragma once
// Bytes per rank of every tensor a training run keeps, in closed form from the configuration:
// nothing is registered or allocated, so even absurd sizes are answered at once. It mirrors the
// buffers the model allocates (parameter store, AdamW state, each layer's kept activations, the
// shared scratch, the MoE copies and staged exchange rows), so on the CPU it is the allocator's
// measured peak (tests/unit/model/memory_plan_test.cpp holds it to within 5%, from above). Token
// choice routes a data-dependent number of rows: its expert rows are counted at their worst case.
// On a GPU the CUDA context, cuBLAS workspace and NCCL buffers come on top as a stated allowance.
#include <string>
#include <vector>

#include "config/config.h"

namespace finemoe {

struct MemoryItem {
  std::string category;  // parameters | gradients | adamw | activations | scratch | communication | allowance
  std::string name;      // what it is, e.g. "blocks.*.moe.y_expert"
  double bytes = 0;      // per rank, all blocks together
};

struct MemoryPlan {
  std::vector<MemoryItem> items;
  double total() const;
  double category_total(const std::string& category) const;
};

// world ranks, expert-parallel size cfg.parallel.expert_parallel; bytes_per_value 8 (fp64) or 4.
// gpu adds the allowance items. bf16_operands (ComputeSettings::bf16_operands: what CUDA bf16 runs
// use) adds the weights' bf16 copy and the packed operands; the three-argument form assumes it
// exactly for a bf16 run on a GPU.
MemoryPlan plan_memory(const Config& cfg, int world, bool gpu, bool bf16_operands);
MemoryPlan plan_memory(const Config& cfg, int world, bool gpu);

// Device scratch the GPU plan counts whose size a library decides, as documented upper bounds (the
// GPU tests hold the sizes the libraries report on a device to them):
// bytes sorted_scatter_add (kernels/sorted_scatter.h) takes for n copies: its three int arrays and
// CUB's radix sort (alternate keys and values, 8n; onesweep histograms and lookback, under n + 64 KiB).
double sorted_scatter_scratch_bound(double n);
// cuDNN's fused attention workspace for seqs sequences (deterministic backward, forward below it):
// cudnn-frontend 1.32 sizes Hopper's deterministic path by its dP matrix in bf16, padded to 64
// query and 128 key positions, beside the fp32 softmax sums; an fp32 dQ accumulator is added too.
double fused_attention_workspace_bound(double seqs, int n_heads, int context, int d);

// Parameter elements this rank stores (replicated tensors whole, its share of the experts).
double stored_parameters(const Config& cfg);

// Rows of expert input one rank can hold in one MoE layer for one micro-batch of a `world`-rank
// run: exact for expert choice inside the rank, else the worst case the plan uses (dropless token
// choice: every rank of the expert group sends all its copies here, at most one per token and local
// expert). 0 for a dense model.
double max_expert_rows(const Config& cfg, int world);

}  // namespace finemoe
