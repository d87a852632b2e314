#pragma once
// One rank's share of training: the model, its parameters and AdamW state, and one optimizer step
// over the global batch (micro-batches, overlapped gradient reduction, clipping, update). The
// Trainer adds data files, records, checkpoints and progress around it; layout tests drive it
// directly on sub-worlds of different sizes.
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "config/config.h"
#include "data/batch_sampler.h"
#include "backend/ops.h"
#include "model/model.h"
#include "parallel/process_grid.h"
#include "train/gradient_sync.h"
#include "train/step_communicators.h"
#include "train/train_state.h"

namespace finemoe {

struct StepResult {
  double loss = 0;       // global mean cross-entropy of the step
  double aux_loss = 0;   // weighted auxiliary losses (token choice), global
  double grad_norm = 0;  // before clipping
};

// MoE metrics of the last step, reduced over the world.
struct StepMetrics {
  int64_t assignments_requested = 0;
  int64_t assignments_dropped = 0;
  int64_t alltoall_bytes = 0;        // all ranks, sent + received
  double alltoall_time_s = 0;        // slowest rank
  double expert_gemm_time_s = 0;     // slowest rank
  double router_time_s = 0;          // slowest rank
  double combine_time_s = 0;         // slowest rank: permute + weighted combine (forward and backward)
  double attention_time_s = 0;       // slowest rank
  double optimizer_time_s = 0;       // slowest rank: gradient norm, clipping, AdamW
  std::vector<int64_t> expert_load;  // [n_blocks x n_experts] tokens per expert
};

// train.cuda_graph: "captured ..." when the step is captured once as a CUDA graph and replayed,
// else "off" or "off: <why not>" (what the run record's rank_devices says). Captured: the CUDA
// backend with fp32 storage types, one rank, one micro-batch, expert choice (static per-expert
// counts: the step never waits for the device) or a dense model.
std::string cuda_graph_status(const Config& cfg, int world_size);

template <typename T>
class TrainingEngine {
 public:
  // Collective over grid.world(): registers and initialises the parameters from train.seed.
  // wrap (tests) may replace the step's communicators before the model takes them (e.g. with
  // recorders of the order collectives are issued in), keeping the originals alive in `owned`.
  TrainingEngine(const Config& cfg, ProcessGrid& grid,
                 const std::function<void(StepCommunicators&)>& wrap = {});

  // Forward + backward of every micro-batch of `step` and the gradient reduction; the store then
  // holds the gradient of the global mean loss. Returns loss and aux loss (global).
  StepResult compute_gradients(int64_t step, const BatchSampler& data);
  // Clipping and AdamW with learning rate `lr`; t = step + 1 for bias correction.
  void apply_update(int64_t step, double lr, double grad_norm);
  // Both, and the gradient norm. With train.cuda_graph (cuda_graph_status), the first step runs
  // eagerly (every buffer at its size), the second is captured and replayed, later ones replayed;
  // a step after time_next_step() runs eagerly with its stopwatches (the phase times come from those).
  StepResult step(int64_t step, double lr, const BatchSampler& data);
  // The next step() runs uncaptured and timed (the trainer asks for it on the steps it logs).
  void time_next_step() { timed_next_ = true; }
  // Tests: run the captured step's work eagerly every step (same kernels and device scalars);
  // use_graph_step_eagerly() also turns the graph step on where it would be off (the CPU: T = float).
  void set_replay(bool replay) { replay_ = replay; }
  void use_graph_step_eagerly();
  bool graph_mode() const { return graph_mode_; }

  // Mean loss over the held-out set (train.eval_sequences sequences).
  double evaluate(const EvalBatches& eval);
  // GEMM FLOPs per token of one forward + backward on the batch of step 0 (gradients discarded).
  double count_flops_per_token(const BatchSampler& data);
  StepMetrics metrics();

  Model<T>& model() { return *model_; }
  ParameterStore<T>& store() { return store_; }
  OptimizerState<T>& optimizer() { return optimizer_; }

 private:
  TokenBatch micro_batch(int m) const;
  // moe.balance = bias: every MoE layer's bias step from the step's loads summed over the world
  // (one host all-reduce of n_blocks x n_experts counts; no device wait).
  void update_routing_biases();

  const Config& cfg_;
  ProcessGrid& grid_;
  StepCommunicators comms_;
  ParameterStore<T> store_;
  std::unique_ptr<MpiCommunicator> routing_group_;
  std::unique_ptr<Communicator> staged_routing_group_;  // CUDA: routing_group_ through the host
  std::unique_ptr<Model<T>> model_;
  OptimizerState<T> optimizer_;
  std::unique_ptr<GradientSync<T>> sync_;
  // Loads this rank's slice of micro-batch `batch` through `fill(inputs, targets)` (host) and
  // copies it to the device. The host buffers are pageable: cudaMemcpyAsync stages them before it
  // returns, so refilling them for the next micro-batch cannot race with the copy.
  template <typename Fill>
  void load_tokens(Fill&& fill);

  std::vector<int32_t> host_inputs_, host_targets_;
  DeviceBuffer<int32_t> inputs_, targets_;  // the model's token ids
  ops::Stopwatch optimizer_watch_;

  // train.cuda_graph: the step's work with its scalars in fixed device memory.
  StepResult graph_step(int64_t step, double lr, const BatchSampler& data);
  void graph_body(const TokenBatch& batch);
  std::vector<std::pair<const void*, size_t>> graph_buffers_;  // the buffers the capture saw
  bool graph_mode_ = false, replay_ = true, timed_next_ = false, warmed_ = false;
  ops::StepGraph graph_;
  DeviceBuffer<double> step_inputs_;  // [lr, t], copied in before each step
  DeviceBuffer<float> adamw_constants_;
};

// The FFN of every block as configured: dense, or MoE with the given communicators.
template <typename T>
typename Model<T>::FfnFactory ffn_factory(const Config& cfg, const MoeComms& comms, int ep_rank, int ep_size);

}  // namespace finemoe
