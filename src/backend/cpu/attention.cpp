#include "backend/cpu/attention.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>

#include "backend/cpu/blas.h"
#include "backend/cpu/vector_dispatch.h"

namespace finemoe::cpu {
namespace {
// Several threads: OpenMP over (sequence, head), BLAS single-threaded inside each small product.
void blas_per_item(std::optional<ScopedBlasThreads>& guard) {
  if (omp_get_max_threads() > 1) guard.emplace(1);
}

// Causal blocks: query rows [t0, t1) only see keys [0, t1), so each product runs over the block's
// causal prefix instead of the whole context (for 256 positions in blocks of 64, 5/8 of the
// full-square FLOPs). Entries of att above the diagonal are still written (zeros).
constexpr int kBlock = 64;

// Rows t in [t0, t1) of one score matrix (leading dimension ld): softmax over j <= t, zeros for
// t < j < ld.
template <typename T>
inline __attribute__((always_inline)) void softmax_rows_body(T* a, int ld, int t0, int t1) {
  for (int t = t0; t < t1; ++t) {
    T* row = a + int64_t(t) * ld;
    T mx = row[0];
#pragma omp simd reduction(max : mx)
    for (int j = 0; j <= t; ++j) mx = row[j] > mx ? row[j] : mx;
    T sum = 0;
#pragma omp simd reduction(+ : sum)
    for (int j = 0; j <= t; ++j) {
      const T e = exp_nonpositive(row[j] - mx);
      row[j] = e;
      sum += e;
    }
    const T inv = T(1) / sum;
#pragma omp simd
    for (int j = 0; j <= t; ++j) row[j] *= inv;
    std::fill(row + t + 1, row + ld, T(0));
  }
}

// Softmax backward on rows [t0, t1): g = p (g - sum_j p g) over j <= t, zeros for t < j < t_end.
template <typename T>
inline __attribute__((always_inline)) void softmax_backward_rows_body(T* da, const T* a, int ld, int t0, int t1,
                                                                      int t_end) {
  for (int t = t0; t < t1; ++t) {
    const T* p = a + int64_t(t) * ld;
    T* g = da + int64_t(t) * ld;
    T dot = 0;
#pragma omp simd reduction(+ : dot)
    for (int j = 0; j <= t; ++j) dot += p[j] * g[j];
#pragma omp simd
    for (int j = 0; j <= t; ++j) g[j] = p[j] * (g[j] - dot);
    std::fill(g + t + 1, g + t_end, T(0));
  }
}

FINEMOE_AVX2 void softmax_rows_avx2(float* a, int ld, int t0, int t1) { softmax_rows_body(a, ld, t0, t1); }
void softmax_rows_plain(float* a, int ld, int t0, int t1) { softmax_rows_body(a, ld, t0, t1); }
FINEMOE_AVX2 void softmax_backward_rows_avx2(float* da, const float* a, int ld, int t0, int t1, int t_end) {
  softmax_backward_rows_body(da, a, ld, t0, t1, t_end);
}
void softmax_backward_rows_plain(float* da, const float* a, int ld, int t0, int t1, int t_end) {
  softmax_backward_rows_body(da, a, ld, t0, t1, t_end);
}

template <typename T>
struct Rows {
  void (*softmax)(T*, int, int, int);
  void (*backward)(T*, const T*, int, int, int, int);
};
template <typename T>
Rows<T> rows_kernels() {
  return {[](T* a, int ld, int t0, int t1) { softmax_rows_body(a, ld, t0, t1); },
          [](T* da, const T* a, int ld, int t0, int t1, int te) { softmax_backward_rows_body(da, a, ld, t0, t1, te); }};
}
template <>
Rows<float> rows_kernels<float>() {
  if (use_avx2()) return {softmax_rows_avx2, softmax_backward_rows_avx2};
  return {softmax_rows_plain, softmax_backward_rows_plain};
}
}  // namespace

template <typename T>
void attention_forward(T* out, T* att, const T* qkv, int n_seq, int context, int n_heads, int d) {
  const int hs = d / n_heads, T_ = context, ld = 3 * d;
  const T scale = T(1) / std::sqrt(T(hs));
  const Rows<T> rows = rows_kernels<T>();
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
    T* y = out + int64_t(s) * T_ * d + h * hs;
    for (int t0 = 0; t0 < T_; t0 += kBlock) {
      const int t1 = std::min(T_, t0 + kBlock), m = t1 - t0;
      gemm<T>(false, true, m, t1, hs, scale, q + int64_t(t0) * ld, ld, k, ld, T(0), a + int64_t(t0) * T_, T_);
      rows.softmax(a, T_, t0, t1);
      gemm<T>(false, false, m, hs, t1, T(1), a + int64_t(t0) * T_, T_, v, ld, T(0), y + int64_t(t0) * d, d);
    }
  }
}

template <typename T>
void attention_backward(T* dqkv, T* datt, const T* dout, const T* qkv, const T* att, int n_seq, int context,
                        int n_heads, int d) {
  const int hs = d / n_heads, T_ = context, ld = 3 * d;
  const T scale = T(1) / std::sqrt(T(hs));
  const Rows<T> rows = rows_kernels<T>();
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
    // Query blocks: dP = dY V^T and dS = softmax'(dP) over the causal prefix, then dQ = scale dS K.
    // Only columns < t1 of block rows [t0, t1) of datt are written (it is scratch).
    for (int t0 = 0; t0 < T_; t0 += kBlock) {
      const int t1 = std::min(T_, t0 + kBlock), m = t1 - t0;
      gemm<T>(false, true, m, t1, hs, T(1), dy + int64_t(t0) * d, d, v, ld, T(0), da + int64_t(t0) * T_, T_);
      rows.backward(da, a, T_, t0, t1, t1);
      gemm<T>(false, false, m, hs, t1, scale, da + int64_t(t0) * T_, T_, k, ld, T(0), dq + int64_t(t0) * ld, ld);
    }
    // Key blocks [j0, j1): only queries t >= j0 see them, dV = P^T dY and dK = scale dS^T Q over those.
    for (int j0 = 0; j0 < T_; j0 += kBlock) {
      const int j1 = std::min(T_, j0 + kBlock), m = j1 - j0, kk = T_ - j0;
      const int64_t corner = int64_t(j0) * T_ + j0;
      gemm<T>(true, false, m, hs, kk, T(1), a + corner, T_, dy + int64_t(j0) * d, d, T(0), dv + int64_t(j0) * ld, ld);
      gemm<T>(true, false, m, hs, kk, scale, da + corner, T_, q + int64_t(j0) * ld, ld, T(0), dk + int64_t(j0) * ld,
              ld);
    }
  }
}

template void attention_forward<float>(float*, float*, const float*, int, int, int, int);
template void attention_forward<double>(double*, double*, const double*, int, int, int, int);
template void attention_backward<float>(float*, float*, const float*, const float*, const float*, int, int,
                                        int, int);
template void attention_backward<double>(double*, double*, const double*, const double*, const double*, int,
                                         int, int, int);

}  // namespace finemoe::cpu
