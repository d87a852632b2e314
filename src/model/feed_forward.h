#pragma once
// The FFN of one block, dense or MoE, behind one interface so the model code does not care.
#include <cstdint>
#include <memory>
#include <vector>

#include "config/config.h"
#include "model/parameters.h"

namespace finemoe {

class Communicator;

// This rank's slice of a micro-batch. Rows of activations are tokens, row = seq * context + pos,
// where seq counts this rank's sequences; global sequence index = first_global_seq + seq.
struct TokenBatch {
  int n_seq = 0;
  int context = 0;
  int64_t first_global_seq = 0;
  // Per-token losses are multiplied by this (1 / tokens in the global optimizer step), so that
  // summing gradients over micro-batches and ranks gives the gradient of the global mean loss.
  double loss_scale = 1.0;
  // Micro-batches in the optimizer step (batch-level auxiliary losses are averaged over them).
  int micro_batches = 1;
  int64_t tokens() const { return int64_t(n_seq) * context; }
};

// What an FFN layer measured in its last forward + backward.
struct FeedForwardStats {
  std::vector<int64_t> expert_tokens;  // tokens processed per global expert (this rank's view)
  int64_t assignments_requested = 0;   // token-expert pairs asked for (token choice)
  int64_t assignments_dropped = 0;     // of those, dropped for capacity
  double alltoall_time_s = 0;
  int64_t alltoall_bytes = 0;          // sent + received by this rank
  double expert_gemm_time_s = 0;
  double router_time_s = 0;
  double combine_time_s = 0;           // permute into send order, combine with the routing weights
  void clear();
};

// Communicators an MoE layer uses; null for a single-process run.
struct MoeComms {
  Communicator* expert_group = nullptr;   // owners of the other experts
  Communicator* routing_group = nullptr;  // ranks sharing a routing group (groups spanning ranks)
  // expert_group reads and writes compute-backend memory without staging it through the host (MPI
  // on the CPU backend, NCCL on CUDA): the copy counts are exchanged where they are computed.
  bool expert_group_takes_compute_memory = false;
};

template <typename T>
class FeedForwardLayer {
 public:
  virtual ~FeedForwardLayer() = default;
  // x: [batch.tokens(), d_model]; writes y of the same shape. Keeps what backward needs.
  virtual void forward(const T* x, T* y, const TokenBatch& batch) = 0;
  // dy -> dx (overwritten); adds parameter gradients into the store's gradient buffers.
  // Includes the gradient of aux_loss() (already weighted and scaled like the main loss).
  virtual void backward(const T* dy, T* dx) = 0;
  // Weighted auxiliary loss of the last forward (token choice: load balancing + z-loss), in the
  // same units as the per-token loss times batch.loss_scale: one double in compute-backend
  // memory, or null when the layer has none.
  virtual const double* aux_loss_sum() const { return nullptr; }
  // Since reset_stats(); reading the timings waits for the device once.
  virtual const FeedForwardStats& stats() = 0;
  virtual void reset_stats() = 0;
};

}  // namespace finemoe
