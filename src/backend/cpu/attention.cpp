#include "backend/cpu/attention.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <optional>

#include "backend/cpu/blas.h"

namespace finemoe::cpu {
namespace {
// Several threads: OpenMP over (sequence, head), BLAS single-threaded inside each small product.
void blas_per_item(std::optional<ScopedBlasThreads>& guard) {
  if (omp_get_max_threads() > 1) guard.emplace(1);
}
}  // namespace

template <typename T>
void attention_forward(T* out, T* att, const T* qkv, int n_seq, int context, int n_heads, int d) {
  const int hs = d / n_heads, T_ = context, ld = 3 * d;
  const T scale = T(1) / std::sqrt(T(hs));
  std::optional<ScopedBlasThreads> blas_guard;
  blas_per_item(blas_guard);
  FlopScope flops(FlopCategory::attention_scores);
#pragma omp parallel for schedule(static)
  for (int item = 0; item < n_seq * n_heads; ++item) {
    const int s = item / n_heads, h = item % n_heads;
    const T* q = qkv + int64_t(s) * T_ * ld + h * hs;
    const T* k = q + d;
    const T* v = q + 2 * d;
    T* a = att + int64_t(item) * T_ * T_;
    gemm<T>(false, true, T_, T_, hs, scale, q, ld, k, ld, T(0), a, T_);
    for (int t = 0; t < T_; ++t) {
      T* row = a + int64_t(t) * T_;
      T mx = row[0];
      for (int j = 1; j <= t; ++j) mx = std::max(mx, row[j]);
      T sum = 0;
      for (int j = 0; j <= t; ++j) {
        row[j] = std::exp(row[j] - mx);
        sum += row[j];
      }
      const T inv = T(1) / sum;
      for (int j = 0; j <= t; ++j) row[j] *= inv;
      for (int j = t + 1; j < T_; ++j) row[j] = T(0);
    }
    gemm<T>(false, false, T_, hs, T_, T(1), a, T_, v, ld, T(0), out + int64_t(s) * T_ * d + h * hs, d);
  }
}

template <typename T>
void attention_backward(T* dqkv, T* datt, const T* dout, const T* qkv, const T* att, int n_seq, int context,
                        int n_heads, int d) {
  const int hs = d / n_heads, T_ = context, ld = 3 * d;
  const T scale = T(1) / std::sqrt(T(hs));
  std::optional<ScopedBlasThreads> blas_guard;
  blas_per_item(blas_guard);
  FlopScope flops(FlopCategory::attention_scores);
#pragma omp parallel for schedule(static)
  for (int item = 0; item < n_seq * n_heads; ++item) {
    const int s = item / n_heads, h = item % n_heads;
    const int64_t base = int64_t(s) * T_ * ld + h * hs;
    const T* q = qkv + base;
    const T* k = q + d;
    const T* v = q + 2 * d;
    T* dq = dqkv + base;
    T* dk = dq + d;
    T* dv = dq + 2 * d;
    const T* dy = dout + int64_t(s) * T_ * d + h * hs;
    const T* a = att + int64_t(item) * T_ * T_;
    T* da = datt + int64_t(item) * T_ * T_;
    gemm<T>(false, true, T_, T_, hs, T(1), dy, d, v, ld, T(0), da, T_);  // dP = dY V^T
    gemm<T>(true, false, T_, hs, T_, T(1), a, T_, dy, d, T(0), dv, ld);  // dV = P^T dY
    // Softmax backward: dS = P (dP - sum_j P dP); zero above the diagonal, where P is.
    for (int t = 0; t < T_; ++t) {
      const T* p = a + int64_t(t) * T_;
      T* g = da + int64_t(t) * T_;
      T dot = 0;
      for (int j = 0; j <= t; ++j) dot += p[j] * g[j];
      for (int j = 0; j <= t; ++j) g[j] = p[j] * (g[j] - dot);
      for (int j = t + 1; j < T_; ++j) g[j] = T(0);
    }
    gemm<T>(false, false, T_, hs, T_, scale, da, T_, k, ld, T(0), dq, ld);  // dQ = scale dS K
    gemm<T>(true, false, T_, hs, T_, scale, da, T_, q, ld, T(0), dk, ld);   // dK = scale dS^T Q
  }
}

template void attention_forward<float>(float*, float*, const float*, int, int, int, int);
template void attention_forward<double>(double*, double*, const double*, int, int, int, int);
template void attention_backward<float>(float*, float*, const float*, const float*, const float*, int, int,
                                        int, int);
template void attention_backward<double>(double*, double*, const double*, const double*, const double*, int,
                                         int, int, int);

}  // namespace finemoe::cpu
