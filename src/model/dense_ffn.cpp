#include "model/dense_ffn.h"

#include <algorithm>
#include <string>
#include <utility>

#include "backend/ops.h"
#include "backend/cpu/blas.h"
#include "model/layer_support.h"

namespace finemoe {

template <typename T>
DenseFeedForward<T>::DenseFeedForward(ParameterStore<T>& store, int block, int d, int d_ff,
                                      FfnActivation activation, double init_scale,
                                      std::shared_ptr<DenseFfnScratch<T>> scratch)
    : DenseFeedForward(store, "blocks." + std::to_string(block) + ".ffn.", block, d, d_ff, activation, init_scale,
                       d_ff, std::move(scratch)) {}

template <typename T>
DenseFeedForward<T>::DenseFeedForward(ParameterStore<T>& store, const std::string& prefix, int block, int d,
                                      int d_ff, FfnActivation activation, double init_scale, int64_t w2_fan_in,
                                      std::shared_ptr<DenseFfnScratch<T>> scratch)
    : store_(store), d_(d), d_ff_(d_ff), activation_(activation),
      scratch_(scratch ? std::move(scratch) : std::make_shared<DenseFfnScratch<T>>()) {
  const int pre = activation.pre_width(d_ff);
  w1_ = store.add({prefix + "w1", {d, pre}, ParamGroup::replicated, fan_in_init(init_scale, d), block});
  w2_ = store.add({prefix + "w2", {d_ff, d}, ParamGroup::replicated, fan_in_init(init_scale, w2_fan_in), block});
}

template <typename T>
void DenseFeedForward<T>::forward(const T* x, T* y, const TokenBatch& batch) {
  DenseFfnScratch<T>& s = *scratch_;
  rows_ = batch.tokens();
  const int rows = static_cast<int>(rows_);
  const int pw = activation_.pre_width(d_ff_);
  x_.keep_copy(x, size_t(rows_) * d_);
  T* pre = pre_.forward_buffer(size_t(rows_) * pw, s.pre_work);
  T* act = ensure_size(s.act, size_t(rows_) * d_ff_);
  ops::gemm<T>(false, false, rows, pw, d_, T(1), x_.operand(x), d_, store_.operand(w1_), pw, T(0), pre, pw);
  ffn_activation_forward<T>(act, pre, rows_, d_ff_, activation_);
  pre_.keep();
  if (bf16_operands()) ensure_size(s.hidden16, size_t(rows_) * pw);  // the backward's size: allocated once
  const ops::Operand<T> acts = ops::operand_for_products<T>(act, rows_ * d_ff_, s.hidden16);
  ops::gemm<T>(false, false, rows, d_, d_ff_, T(1), acts, d_ff_, store_.operand(w2_), d_, T(0), y, d_);
}

template <typename T>
void DenseFeedForward<T>::backward(const T* dy, T* dx) {
  DenseFfnScratch<T>& s = *scratch_;
  const int rows = static_cast<int>(rows_);
  const int pw = activation_.pre_width(d_ff_);
  const T* pre = pre_.restore(s.pre_work);
  T* act = ensure_size(s.act, size_t(rows_) * d_ff_);
  ffn_activation_forward<T>(act, pre, rows_, d_ff_, activation_);  // recomputed: cheaper than kept
  T* dact = ensure_size(s.dact, size_t(rows_) * d_ff_);
  // y = act W2: dW2 += act^T dy, dact = dy W2^T.
  const ops::Operand<T> dys = ops::operand_for_products(dy, rows_ * d_, s.rows16);
  const ops::Operand<T> acts = ops::operand_for_products<T>(act, rows_ * d_ff_, s.hidden16);
  ops::gemm<T>(true, false, d_ff_, d_, rows, T(1), acts, d_ff_, dys, d_, T(1), store_.grad(w2_), d_);
  ops::gemm<T>(false, true, rows, d_ff_, d_, T(1), dys, d_, store_.operand(w2_), d_, T(0), dact, d_ff_);
  // dpre = act'(pre) dact: in place when elementwise.
  T* dpre = activation_.gated ? ensure_size(s.dpre, size_t(rows_) * pw) : dact;
  ffn_activation_backward<T>(dpre, pre, dact, rows_, d_ff_, activation_);
  // pre = x W1: dW1 += x^T dpre, dx = dpre W1^T (the bf16 buffer held act before: done with it).
  const ops::Operand<T> xs = x_.backward_operand(s.x_work);
  const ops::Operand<T> dpres = ops::operand_for_products<T>(dpre, rows_ * pw, s.hidden16);
  ops::gemm<T>(true, false, d_, pw, rows, T(1), xs, d_, dpres, pw, T(1), store_.grad(w1_), pw);
  ops::gemm<T>(false, true, rows, d_, pw, T(1), dpres, pw, store_.operand(w1_), pw, T(0), dx, d_);
}

template <typename T>
std::unique_ptr<FeedForwardLayer<T>> make_dense_ffn(const Config& cfg, int block, ParameterStore<T>& store,
                                                    std::shared_ptr<DenseFfnScratch<T>> scratch) {
  const int d = cfg.model.d_model;
  return std::make_unique<DenseFeedForward<T>>(store, block, d, cfg.d_ff(), parse_activation(cfg.model.activation),
                                               cfg.model.init_scale, std::move(scratch));
}

template class DenseFeedForward<float>;
template class DenseFeedForward<double>;
template std::unique_ptr<FeedForwardLayer<float>> make_dense_ffn<float>(const Config&, int, ParameterStore<float>&,
                                                                        std::shared_ptr<DenseFfnScratch<float>>);
template std::unique_ptr<FeedForwardLayer<double>> make_dense_ffn<double>(const Config&, int, ParameterStore<double>&,
                                                                          std::shared_ptr<DenseFfnScratch<double>>);

}  // namespace finemoe
