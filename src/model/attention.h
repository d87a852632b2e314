#pragma once
// Causal multi-head self-attention: qkv = x W_qkv, per-head causal softmax attention, y = heads W_out.
// No biases; weights [in, out] row-major.
#include <string>
#include <vector>

#include "backend/compute.h"
#include "model/feed_forward.h"
#include "model/parameters.h"

namespace finemoe {

// Backward scratch; one per model, shared by its blocks (backward runs one block at a time).
template <typename T>
struct AttentionScratch {
  DeviceBuffer<T> dqkv, datt, dheads;
};

template <typename T>
class CausalSelfAttention {
 public:
  // Registers `blocks.{block}.attn.qkv` [d, 3d] and `blocks.{block}.attn.out` [d, d].
  CausalSelfAttention(ParameterStore<T>& store, int block, int d, int n_heads, double init_scale,
                      AttentionScratch<T>& scratch);
  // x, y: [batch.tokens(), d]; x must stay valid until backward (the model keeps it).
  void forward(const T* x, T* y, const TokenBatch& batch);
  // dx overwritten; weight gradients accumulated.
  void backward(const T* dy, T* dx);

 private:
  ParameterStore<T>& store_;
  ParamHandle qkv_w_, out_w_;
  int d_, n_heads_;
  const T* x_ = nullptr;
  int n_seq_ = 0, seq_len_ = 0;
  DeviceBuffer<T> qkv_, att_, heads_;  // kept for backward
  AttentionScratch<T>& scratch_;
};

}  // namespace finemoe
