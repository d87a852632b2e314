#include "model/moe/experts.h"

#include "backend/cpu/blas.h"
#include "model/layer_support.h"
#include "util/check.h"

namespace finemoe::moe {

template <typename T>
GroupedExperts<T>::GroupedExperts(int n_local, int d_model, int d_expert, cpu::Activation activation)
    : n_local_(n_local), d_model_(d_model), d_expert_(d_expert), activation_(activation),
      offsets_(n_local + 1, 0) {}

template <typename T>
void GroupedExperts<T>::forward(const T* w1, const T* w2, const T* x, const std::vector<int64_t>& counts,
                                T* y) {
  FINEMOE_CHECK(counts.size() == size_t(n_local_), "expected " << n_local_ << " expert counts");
  for (int j = 0; j < n_local_; ++j) offsets_[j + 1] = offsets_[j] + counts[j];
  const size_t hidden_size = size_t(offsets_[n_local_]) * d_expert_;
  T* h = ensure_size(hidden_, hidden_size);
  T* a = ensure_size(activated_, hidden_size);
  x_ = x;
  const int64_t w1_size = int64_t(d_model_) * d_expert_;
  cpu::FlopScope flops(cpu::FlopCategory::ffn);
  cpu::ScopedBlasThreads one_thread(1);
#pragma omp parallel for schedule(dynamic, 1)
  for (int j = 0; j < n_local_; ++j) {
    const int m = static_cast<int>(offsets_[j + 1] - offsets_[j]);
    if (m == 0) continue;
    const int64_t r0 = offsets_[j];
    T* hj = h + r0 * d_expert_;
    T* aj = a + r0 * d_expert_;
    cpu::gemm<T>(false, false, m, d_expert_, d_model_, T(1), x + r0 * d_model_, d_model_, w1 + j * w1_size,
                 d_expert_, T(0), hj, d_expert_);
    cpu::activation_forward(aj, hj, int64_t(m) * d_expert_, activation_);
    cpu::gemm<T>(false, false, m, d_model_, d_expert_, T(1), aj, d_expert_, w2 + j * w1_size, d_model_, T(0),
                 y + r0 * d_model_, d_model_);
  }
}

template <typename T>
void GroupedExperts<T>::backward(const T* w1, const T* w2, const T* dy, T* dx, T* dw1, T* dw2) {
  const size_t hidden_size = size_t(offsets_[n_local_]) * d_expert_;
  T* da = ensure_size(dactivated_, hidden_size);
  T* dh = ensure_size(dhidden_, hidden_size);
  const T* h = hidden_.data();
  const T* a = activated_.data();
  const int64_t w_size = int64_t(d_model_) * d_expert_;
  cpu::FlopScope flops(cpu::FlopCategory::ffn);
  cpu::ScopedBlasThreads one_thread(1);
#pragma omp parallel for schedule(dynamic, 1)
  for (int j = 0; j < n_local_; ++j) {
    const int m = static_cast<int>(offsets_[j + 1] - offsets_[j]);
    if (m == 0) continue;
    const int64_t r0 = offsets_[j];
    const T* dyj = dy + r0 * d_model_;
    const T* xj = x_ + r0 * d_model_;
    T* daj = da + r0 * d_expert_;
    T* dhj = dh + r0 * d_expert_;
    // da = dy W2^T; dW2 += a^T dy; dh = act'(h) da; dW1 += x^T dh; dx = dh W1^T.
    cpu::gemm<T>(false, true, m, d_expert_, d_model_, T(1), dyj, d_model_, w2 + j * w_size, d_model_, T(0), daj,
                 d_expert_);
    cpu::gemm<T>(true, false, d_expert_, d_model_, m, T(1), a + r0 * d_expert_, d_expert_, dyj, d_model_, T(1),
                 dw2 + j * w_size, d_model_);
    cpu::activation_backward(dhj, h + r0 * d_expert_, daj, int64_t(m) * d_expert_, activation_);
    cpu::gemm<T>(true, false, d_model_, d_expert_, m, T(1), xj, d_model_, dhj, d_expert_, T(1), dw1 + j * w_size,
                 d_expert_);
    cpu::gemm<T>(false, true, m, d_model_, d_expert_, T(1), dhj, d_expert_, w1 + j * w_size, d_expert_, T(0),
                 dx + r0 * d_model_, d_model_);
  }
}

template class GroupedExperts<float>;
template class GroupedExperts<double>;

}  // namespace finemoe::moe
