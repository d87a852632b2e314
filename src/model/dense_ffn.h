#pragma once
// The dense FFN: y = act(x W1) W2, W1 [d, d_ff], W2 [d_ff, d], no biases.
#include <memory>
#include <vector>

#include "backend/compute.h"
#include "backend/cpu/activation.h"
#include "config/config.h"
#include "model/feed_forward.h"

namespace finemoe {

template <typename T>
class DenseFeedForward final : public FeedForwardLayer<T> {
 public:
  // Registers `blocks.{block}.ffn.w1` [d, d_ff] and `blocks.{block}.ffn.w2` [d_ff, d], each with
  // std sqrt(init_scale / fan_in) (fan_in = d and d_ff).
  DenseFeedForward(ParameterStore<T>& store, int block, int d, int d_ff, cpu::Activation activation,
                   double init_scale);
  // Copies x (so the caller may reuse its buffer before backward).
  void forward(const T* x, T* y, const TokenBatch& batch) override;
  void backward(const T* dy, T* dx) override;
  const FeedForwardStats& stats() override { return stats_; }
  void reset_stats() override { stats_.clear(); }

 private:
  ParameterStore<T>& store_;
  ParamHandle w1_, w2_;
  int d_, d_ff_;
  cpu::Activation activation_;
  int64_t rows_ = 0;
  DeviceBuffer<T> x_, pre_, act_;  // kept for backward
  DeviceBuffer<T> dact_;           // backward scratch
  FeedForwardStats stats_;
};

// The dense FFN of block `block` for cfg (d_ff = 4 d_model, model.activation, model.init_scale).
template <typename T>
std::unique_ptr<FeedForwardLayer<T>> make_dense_ffn(const Config& cfg, int block, ParameterStore<T>& store);

}  // namespace finemoe
