#include "model/output_head.h"

#include "backend/ops.h"
#include "backend/cpu/blas.h"
#include "model/layer_support.h"
#include "util/check.h"

namespace finemoe {

template <typename T>
OutputHead<T>::OutputHead(ParameterStore<T>& store, int d, int vocab, double init_scale)
    : store_(store), tied_(false), d_(d), vocab_(vocab) {
  weight_ = store.add({"head.weight", {d, vocab}, ParamGroup::replicated, fan_in_init(init_scale, d), -1});
}

template <typename T>
OutputHead<T>::OutputHead(ParameterStore<T>& store, int d, int vocab, ParamHandle tied_token_table)
    : store_(store), weight_(tied_token_table), tied_(true), d_(d), vocab_(vocab) {}

template <typename T>
void OutputHead<T>::forward(const T* x, const int32_t* targets, int64_t rows, bool grad, T dscale,
                            double* loss_sum) {
  x_ = x;
  rows_ = rows;
  const int m = static_cast<int>(rows);
  T* logits = ensure_size(logits_, rows * vocab_);
  const ops::Operand<T> w = store_.operand(weight_);
  {
    cpu::FlopScope flops(cpu::FlopCategory::head);
    if (tied_)
      ops::gemm<T>(false, true, m, vocab_, d_, T(1), x, d_, w, d_, T(0), logits, vocab_);
    else
      ops::gemm<T>(false, false, m, vocab_, d_, T(1), x, d_, w, vocab_, T(0), logits, vocab_);
  }
  T* dlogits = grad ? ensure_size(dlogits_, rows * vocab_) : nullptr;
  ops::softmax_cross_entropy<T>(dlogits, logits, targets, rows, vocab_, dscale, loss_sum);
}

template <typename T>
void OutputHead<T>::backward(T* dx) {
  const int m = static_cast<int>(rows_);
  const ops::Operand<T> w = store_.operand(weight_);
  T* dw = store_.grad(weight_);
  const ops::Operand<T> g = ops::operand_for_products<T>(dlogits_.data(), rows_ * vocab_, dlogits16_);
  cpu::FlopScope flops(cpu::FlopCategory::head);
  if (tied_) {
    // logits = x E^T: dE += dlogits^T x, dx = dlogits E.
    ops::gemm<T>(true, false, vocab_, d_, m, T(1), g, vocab_, x_, d_, T(1), dw, d_);
    ops::gemm<T>(false, false, m, d_, vocab_, T(1), g, vocab_, w, d_, T(0), dx, d_);
  } else {
    // logits = x W: dW += x^T dlogits, dx = dlogits W^T.
    ops::gemm<T>(true, false, d_, vocab_, m, T(1), x_, d_, g, vocab_, T(1), dw, vocab_);
    ops::gemm<T>(false, true, m, d_, vocab_, T(1), g, vocab_, w, vocab_, T(0), dx, d_);
  }
}

template class OutputHead<float>;
template class OutputHead<double>;

}  // namespace finemoe
