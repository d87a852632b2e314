#pragma once
// The performance model of docs/performance.md: per device, the step time of a model shape on a
// machine (GEMM efficiency per expert width, all-to-all over the NVLink and network tiers, the
// exposed gradient all-reduce, non-GEMM overhead), MFU, and memory per device for an EP layout.
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace finemoe::perf {

struct ModelShape {
  std::string name = "custom";
  double d = 1024, blocks = 16, context = 256, vocab = 50257, E = 64, G = 8;
  double batch_tokens = 524288;  // global tokens per optimizer step (the paper: 0.5M)
  bool moe = true;
};

struct Machine {
  double peak = 989e12;           // dense peak FLOP/s per device (H100 SXM bf16)
  double mem_bytes = 80e9;        // per device
  double dense_eff = 0.6;         // large dense GEMM efficiency (fraction of peak)
  std::vector<std::pair<double, double>> expert_eff;  // (d_expert, efficiency relative to peak), sorted
  double overhead = 0.15;         // non-GEMM time as a fraction of GEMM time (norms, softmax, optimizer)
  double act_bytes = 2;           // activation element size in the all-to-all (bf16)
  double grad_bytes = 4;          // gradient element size in the all-reduce
  double state_bytes_per_param = 16;  // weights + master + grads + AdamW moments
  // Tiers: alpha (s per message), beta (bytes/s per device, one direction, as achieved in an all-to-all).
  double nv_alpha = 3e-6, nv_beta = 150e9;   // NVLink (H100 SXM: ~450 GB/s per direction peak, ~1/3 in all-to-all)
  double ib_alpha = 10e-6, ib_beta = 20e9;   // InfiniBand NDR 400 Gb/s per GPU, ~40% in all-to-all
  int gpus_per_node = 4;
  double memory_fraction = 0.7;   // of device memory for weights and optimizer state (the rest: activations)
  // Where each constant came from, by name (peak, dense_eff, expert_eff, nv_beta, ...):
  // "documented default (docs/performance.md)", "allocation FILE ...", "measured by finemoe-bench: FILE".
  std::map<std::string, std::string> provenance;

  Machine();
};

// The H100 planning default of expert GEMM efficiency per d_expert (docs/performance.md).
std::vector<std::pair<double, double>> default_expert_efficiency();
// Efficiency at d_expert, interpolated in log d_expert (dense_eff without a table).
double expert_efficiency(const Machine& m, double d_expert);

struct Prediction {
  int ep = 1;
  double compute_s = 0, a2a_s = 0, allreduce_s = 0, allreduce_exposed_s = 0, step_s = 0;
  double comm_share = 0, mfu = 0, mem_bytes = 0, model_flops_per_token = 0;
  bool fits = true;
};

// One exchange of `bytes` per device over an EP group of `ep` consecutive devices.
double exchange_time(const Machine& m, int ep, double bytes);
// Ring all-reduce of `bytes` over `n` devices, over the network tier when they span nodes.
double allreduce_time(const Machine& m, int n, double bytes, bool spans_nodes);
// The step of `shape` on `devices` devices with expert parallelism `ep`.
Prediction predict(const ModelShape& shape, const Machine& m, int devices, int ep);
// The fastest EP (powers of two dividing the devices and the experts) that fits in memory, else
// the smallest footprint; all candidates in `all` when given.
Prediction best_layout(const ModelShape& shape, const Machine& m, int devices, std::vector<Prediction>* all = nullptr);

}  // namespace finemoe::perf
