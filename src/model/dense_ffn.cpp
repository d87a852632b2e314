#include "model/dense_ffn.h"

#include <algorithm>
#include <string>

#include "backend/ops.h"
#include "backend/cpu/blas.h"
#include "model/layer_support.h"

namespace finemoe {

template <typename T>
DenseFeedForward<T>::DenseFeedForward(ParameterStore<T>& store, int block, int d, int d_ff,
                                      FfnActivation activation, double init_scale)
    : DenseFeedForward(store, "blocks." + std::to_string(block) + ".ffn.", block, d, d_ff, activation, init_scale,
                       d_ff) {}

template <typename T>
DenseFeedForward<T>::DenseFeedForward(ParameterStore<T>& store, const std::string& prefix, int block, int d,
                                      int d_ff, FfnActivation activation, double init_scale, int64_t w2_fan_in)
    : store_(store), d_(d), d_ff_(d_ff), activation_(activation) {
  const int pre = activation.pre_width(d_ff);
  w1_ = store.add({prefix + "w1", {d, pre}, ParamGroup::replicated, fan_in_init(init_scale, d), block});
  w2_ = store.add({prefix + "w2", {d_ff, d}, ParamGroup::replicated, fan_in_init(init_scale, w2_fan_in), block});
}

template <typename T>
void DenseFeedForward<T>::forward(const T* x, T* y, const TokenBatch& batch) {
  rows_ = batch.tokens();
  const int rows = static_cast<int>(rows_);
  T* xs = ensure_size(x_, rows_ * d_);
  ops::copy(xs, x, rows_ * d_);
  const int pw = activation_.pre_width(d_ff_);
  T* pre = ensure_size(pre_, rows_ * pw);
  T* act = ensure_size(act_, rows_ * d_ff_);
  ops::gemm<T>(false, false, rows, pw, d_, T(1), xs, d_, store_.operand(w1_), pw, T(0), pre, pw);
  ffn_activation_forward<T>(act, pre, rows_, d_ff_, activation_);
  ops::gemm<T>(false, false, rows, d_, d_ff_, T(1), act, d_ff_, store_.operand(w2_), d_, T(0), y, d_);
}

template <typename T>
void DenseFeedForward<T>::backward(const T* dy, T* dx) {
  const int rows = static_cast<int>(rows_);
  T* dact = ensure_size(dact_, rows_ * d_ff_);
  // y = act W2: dW2 += act^T dy, dact = dy W2^T.
  ops::gemm<T>(true, false, d_ff_, d_, rows, T(1), act_.data(), d_ff_, dy, d_, T(1), store_.grad(w2_), d_);
  ops::gemm<T>(false, true, rows, d_ff_, d_, T(1), dy, d_, store_.operand(w2_), d_, T(0), dact, d_ff_);
  // dpre = act'(pre) dact: in place when elementwise.
  const int pw = activation_.pre_width(d_ff_);
  T* dpre = activation_.gated ? ensure_size(dpre_, rows_ * pw) : dact;
  ffn_activation_backward<T>(dpre, pre_.data(), dact, rows_, d_ff_, activation_);
  // pre = x W1: dW1 += x^T dpre, dx = dpre W1^T.
  ops::gemm<T>(true, false, d_, pw, rows, T(1), x_.data(), d_, dpre, pw, T(1), store_.grad(w1_), pw);
  ops::gemm<T>(false, true, rows, d_, pw, T(1), dpre, pw, store_.operand(w1_), pw, T(0), dx, d_);
}

template <typename T>
std::unique_ptr<FeedForwardLayer<T>> make_dense_ffn(const Config& cfg, int block, ParameterStore<T>& store) {
  const int d = cfg.model.d_model;
  return std::make_unique<DenseFeedForward<T>>(store, block, d, cfg.d_ff(), parse_activation(cfg.model.activation),
                                               cfg.model.init_scale);
}

template class DenseFeedForward<float>;
template class DenseFeedForward<double>;
template std::unique_ptr<FeedForwardLayer<float>> make_dense_ffn<float>(const Config&, int, ParameterStore<float>&);
template std::unique_ptr<FeedForwardLayer<double>> make_dense_ffn<double>(const Config&, int,
                                                                          ParameterStore<double>&);

}  // namespace finemoe
