#pragma once
// The dense FFN: y = act(x W1) W2, W1 [d, d_ff] ([d, 2 d_ff] = [gate | up] for swiglu), W2 [d_ff, d],
// no biases. Also the MoE layer's shared experts (S experts of width d_expert as one FFN of width
// S d_expert: with weight 1 on every token their sum is exactly that).
#include <memory>
#include <vector>

#include "backend/compute.h"
#include "backend/kept_activation.h"
#include "config/config.h"
#include "model/feed_forward.h"
#include "model/layer_support.h"

namespace finemoe {

// Buffers a dense FFN needs only inside its forward or its backward: shared by the dense FFNs of a
// model (one runs at a time), so they cost one layer's worth, not n_blocks'.
template <typename T>
struct DenseFfnScratch {
  DeviceBuffer<T> act;               // [rows, d_ff]: the activation (forward; recomputed in the backward)
  DeviceBuffer<T> dact, dpre;        // its gradient; the pre-activation's (gated only, else dact in place)
  DeviceBuffer<T> x_work, pre_work;  // bf16 activation storage: fp32 working copies of the kept tensors
  // bf16 operands, packed for their products: [rows, d] dy; [rows, pre_width] act, then dpre.
  DeviceBuffer<Bfloat16> rows16, hidden16;
};

template <typename T>
class DenseFeedForward final : public FeedForwardLayer<T> {
 public:
  // Registers `blocks.{block}.ffn.w1` [d, d_ff] and `blocks.{block}.ffn.w2` [d_ff, d], each with
  // std sqrt(init_scale / fan_in) (fan_in = d and d_ff).
  DenseFeedForward(ParameterStore<T>& store, int block, int d, int d_ff, FfnActivation activation,
                   double init_scale, std::shared_ptr<DenseFfnScratch<T>> scratch = nullptr);
  // `prefix`w1, `prefix`w2 with W2's fan_in w2_fan_in (the shared experts: the dense FFN's d_ff, as
  // the routed experts').
  DenseFeedForward(ParameterStore<T>& store, const std::string& prefix, int block, int d, int d_ff,
                   FfnActivation activation, double init_scale, int64_t w2_fan_in,
                   std::shared_ptr<DenseFfnScratch<T>> scratch = nullptr);
  // Keeps a copy of x (its bf16 copy with bf16 activation storage) and the pre-activation, so the
  // caller may reuse x's buffer before backward; the backward recomputes the activation.
  void forward(const T* x, T* y, const TokenBatch& batch) override;
  void backward(const T* dy, T* dx) override;
  const FeedForwardStats& stats() override { return stats_; }
  void reset_stats() override { stats_.clear(); }

 private:
  ParameterStore<T>& store_;
  ParamHandle w1_, w2_;
  int d_, d_ff_;
  FfnActivation activation_;
  int64_t rows_ = 0;
  KeptActivation<T> x_, pre_;  // kept for backward
  std::shared_ptr<DenseFfnScratch<T>> scratch_;
  FeedForwardStats stats_;
};

// The dense FFN of block `block` for cfg (d_ff = cfg.d_ff(), model.activation, model.init_scale).
template <typename T>
std::unique_ptr<FeedForwardLayer<T>> make_dense_ffn(const Config& cfg, int block, ParameterStore<T>& store,
                                                    std::shared_ptr<DenseFfnScratch<T>> scratch = nullptr);

}  // namespace finemoe
