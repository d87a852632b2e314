#include "model/moe/experts.h"

#include "backend/cpu/blas.h"
#include "backend/ops.h"
#include "model/layer_support.h"
#include "util/check.h"

namespace finemoe::moe {

template <typename T>
GroupedExperts<T>::GroupedExperts(int n_local, int d_model, int d_expert, FfnActivation activation, bool strided)
    : n_local_(n_local), d_model_(d_model), d_expert_(d_expert), activation_(activation), strided_(strided),
      d_pre_(activation.pre_width(d_expert)), offsets_(n_local + 1, 0) {}

template <typename T>
void GroupedExperts<T>::forward(ops::Operand<T> w1, ops::Operand<T> w2, const T* x,
                                const std::vector<int64_t>& counts, T* y, ExpertScratch<T>& scratch) {
  FINEMOE_CHECK(counts.size() == size_t(n_local_), "expected " << n_local_ << " expert counts");
  for (int j = 0; j < n_local_; ++j) offsets_[j + 1] = offsets_[j] + counts[j];
  const int64_t rows = offsets_[n_local_];
  T* h = hidden_.forward_buffer(size_t(rows) * d_pre_, scratch.hidden_work);
  T* a = ensure_size(scratch.activated, size_t(rows) * d_expert_);
  const int dm = d_model_, de = d_expert_, dp = d_pre_;
  const int64_t w1_size = int64_t(dm) * dp, w2_size = int64_t(de) * dm;
  cpu::FlopScope flops(cpu::FlopCategory::ffn);
  // h = x W1, a = act(h), y = a W2, per expert.
  const ops::Operand<T> xs = ops::operand_for_products(x, rows * dm, scratch.rows16);
  if (const int cap = equal_rows(); cap > 0) {
    // Expert choice: one strided product with the activation as its epilogue where the backend has one.
    ops::gemm_activation<T>(false, false, cap, dp, dm, xs, dm, int64_t(cap) * dm, w1, dp, w1_size, h, a, dp,
                            int64_t(cap) * dp, n_local_, activation_.elementwise);
  } else {
    ops::grouped_gemm<T>(false, false, T(1), per_expert([&](int j, int64_t r0, int m) {
      return ops::GemmProblem<T>{m, dp, dm, xs.at(r0 * dm), dm, w1.at(j * w1_size), dp, h + r0 * dp, dp};
    }), T(0));
    ffn_activation_forward<T>(a, h, rows, de, activation_);
  }
  hidden_.keep();
  if (bf16_operands()) ensure_size(scratch.hidden16, size_t(rows) * dp);  // the backward's size: allocated once
  const ops::Operand<T> as = ops::operand_for_products<T>(a, rows * de, scratch.hidden16);
  ops::grouped_gemm<T>(false, false, T(1), per_expert([&](int j, int64_t r0, int m) {
    return ops::GemmProblem<T>{m, dm, de, as.at(r0 * de), de, w2.at(j * w2_size), dm, y + r0 * dm, dm};
  }), T(0));
}

template <typename T>
void GroupedExperts<T>::backward(ops::Operand<T> w1, ops::Operand<T> w2, const T* x, const T* dy, T* dx, T* dw1,
                                 T* dw2, ExpertScratch<T>& scratch) {
  const int64_t rows = offsets_[n_local_];
  const int dm = d_model_, de = d_expert_, dp = d_pre_;
  T* dh = ensure_size(scratch.dhidden, size_t(rows) * dp);
  T* a = ensure_size(scratch.activated, size_t(rows) * de);
  const T* h = hidden_.restore(scratch.hidden_work);
  const int64_t w1_size = int64_t(dm) * dp, w2_size = int64_t(de) * dm;
  ffn_activation_forward<T>(a, h, rows, de, activation_);  // recomputed: cheaper than kept
  cpu::FlopScope flops(cpu::FlopCategory::ffn);
  // da = dy W2^T; dW2 += a^T dy; dh = act'(h) da; dW1 += x^T dh; dx = dh W1^T.
  // Each bf16 buffer holds two operands in turn (dy then x; a then dh): the memory of one layer's rows.
  const ops::Operand<T> dys = ops::operand_for_products(dy, rows * dm, scratch.rows16);
  const ops::Operand<T> as = ops::operand_for_products<T>(a, rows * de, scratch.hidden16);
  const int cap = equal_rows();
  const bool fused = cap > 0;
  T* da = fused ? nullptr : ensure_size(scratch.dactivated, size_t(rows) * de);
  if (fused) {  // dh = (dy W2^T) act'(h) in one strided product (the epilogue where the backend has one)
    ops::gemm_activation_backward<T>(false, true, cap, de, dm, dys, dm, int64_t(cap) * dm, w2, dm, w2_size, h, dh,
                                     de, int64_t(cap) * de, n_local_, activation_.elementwise);
  } else {
    ops::grouped_gemm<T>(false, true, T(1), per_expert([&](int j, int64_t r0, int m) {
      return ops::GemmProblem<T>{m, de, dm, dys.at(r0 * dm), dm, w2.at(j * w2_size), dm, da + r0 * de, de};
    }), T(0));
  }
  ops::grouped_gemm<T>(true, false, T(1), per_expert([&](int j, int64_t r0, int m) {
    return ops::GemmProblem<T>{de, dm, m, as.at(r0 * de), de, dys.at(r0 * dm), dm, dw2 + j * w2_size, dm};
  }), T(1));
  if (!fused) ffn_activation_backward<T>(dh, h, da, rows, de, activation_);
  const ops::Operand<T> xs = ops::operand_for_products(x, rows * dm, scratch.rows16);
  const ops::Operand<T> dhs = ops::operand_for_products<T>(dh, rows * dp, scratch.hidden16);
  ops::grouped_gemm<T>(true, false, T(1), per_expert([&](int j, int64_t r0, int m) {
    return ops::GemmProblem<T>{dm, dp, m, xs.at(r0 * dm), dm, dhs.at(r0 * dp), dp, dw1 + j * w1_size, dp};
  }), T(1));
  ops::grouped_gemm<T>(false, true, T(1), per_expert([&](int j, int64_t r0, int m) {
    return ops::GemmProblem<T>{m, dm, dp, dhs.at(r0 * dp), dp, w1.at(j * w1_size), dp, dx + r0 * dm, dm};
  }), T(0));
}

template <typename T>
int GroupedExperts<T>::equal_rows() const {
  if (!strided_ || activation_.gated) return 0;
  const int64_t first = offsets_[1] - offsets_[0];
  for (int j = 1; j < n_local_; ++j)  // a routing group spanning ranks can leave them unequal
    if (offsets_[j + 1] - offsets_[j] != first) return 0;
  return static_cast<int>(first);
}

template <typename T>
template <typename MakeProblem>
const std::vector<ops::GemmProblem<T>>& GroupedExperts<T>::per_expert(const MakeProblem& make) {
  problems_.clear();
  for (int j = 0; j < n_local_; ++j) {
    const int m = static_cast<int>(offsets_[j + 1] - offsets_[j]);
    if (m > 0) problems_.push_back(make(j, offsets_[j], m));
  }
  return problems_;
}

template class GroupedExperts<float>;
template class GroupedExperts<double>;

}  // namespace finemoe::moe
