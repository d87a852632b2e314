#pragma once
// Causal multi-head self-attention: qkv = x W_qkv, per-head causal softmax attention, y = heads W_out.
// No biases; weights [in, out] row-major.
#include <string>
#include <vector>

#include "backend/compute.h"
#include "backend/kept_activation.h"
#include "model/feed_forward.h"
#include "model/parameters.h"

namespace finemoe {

// Backward scratch, and with bf16 activation storage the fp32 working copies of the kept tensors;
// one per model, shared by its blocks (one block runs at a time).
template <typename T>
struct AttentionScratch {
  DeviceBuffer<T> dqkv, datt, dheads;
  DeviceBuffer<T> x_work, qkv_work, att_work, heads_work;
  DeviceBuffer<Bfloat16> gradient16;  // bf16 operands: dy, then dqkv, packed for their two products
};

template <typename T>
class CausalSelfAttention {
 public:
  // Registers `blocks.{block}.attn.qkv` [d, 3d] and `blocks.{block}.attn.out` [d, d].
  CausalSelfAttention(ParameterStore<T>& store, int block, int d, int n_heads, double init_scale,
                      AttentionScratch<T>& scratch);
  // x, y: [batch.tokens(), d]; x must stay valid until backward (the model keeps it) unless the
  // activations are stored in bf16 (the layer then keeps x's bf16 copy).
  void forward(const T* x, T* y, const TokenBatch& batch);
  // dx overwritten; weight gradients accumulated.
  void backward(const T* dy, T* dx);
  // Whether the last forward took cuDNN's fused path (ops::attention_fused).
  bool fused() const { return fused_; }

 private:
  ParameterStore<T>& store_;
  ParamHandle qkv_w_, out_w_;
  int d_, n_heads_;
  const T* x_ = nullptr;      // full storage: the model's buffer
  KeptActivation<T> kept_x_;  // bf16 storage: its copy
  int n_seq_ = 0, seq_len_ = 0;
  KeptActivation<T> qkv_, att_, heads_;  // kept for backward (att_: the probabilities)
  bool fused_ = false;      // cuDNN's fused path (ops::attention_fused): att holds statistics
  DeviceBuffer<T> stats_;   // its fp32 softmax statistics [n_seq, heads, T], never rounded
  AttentionScratch<T>& scratch_;
};

}  // namespace finemoe
