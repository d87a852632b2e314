#include "model/moe/router.h"

#include <algorithm>
#include <cmath>

#include "backend/ops.h"

namespace finemoe::moe {
namespace {

// log(sum_e exp(l_e)), stable.
template <typename T>
T log_sum_exp(const T* l, int n) {
  const T m = *std::max_element(l, l + n);
  T s = 0;
  for (int e = 0; e < n; ++e) s += std::exp(l[e] - m);
  return m + std::log(s);
}

}  // namespace

template <typename T>
void router_forward(const T* x, const T* w, int64_t rows, int d_model, int n_experts, T* logits, T* probs) {
  if (rows == 0) return;
  ops::gemm<T>(false, false, static_cast<int>(rows), n_experts, d_model, T(1), x, d_model, w, n_experts, T(0),
               logits, n_experts);
  ops::row_softmax<T>(logits, probs, rows, n_experts);
}

template <typename T>
void router_backward(const T* x, const T* w, const T* probs, const T* dprobs, T* dlogits, int64_t rows,
                     int d_model, int n_experts, T* dx, T* dw) {
  if (rows == 0) return;
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < rows; ++t) {
    const T* p = probs + t * n_experts;
    const T* dp = dprobs + t * n_experts;
    T* dl = dlogits + t * n_experts;
    T dot = 0;
    for (int e = 0; e < n_experts; ++e) dot += p[e] * dp[e];
    for (int e = 0; e < n_experts; ++e) dl[e] += p[e] * (dp[e] - dot);
  }
  const int m = static_cast<int>(rows);
  ops::gemm<T>(true, false, d_model, n_experts, m, T(1), x, d_model, dlogits, n_experts, T(1), dw, n_experts);
  ops::gemm<T>(false, true, m, d_model, n_experts, T(1), dlogits, n_experts, w, n_experts, T(1), dx, d_model);
}

template <typename T>
double router_z_loss(const T* logits, const T* probs, int64_t rows, int n_experts, double scale, T* dlogits) {
  double total = 0;
#pragma omp parallel for schedule(static) reduction(+ : total)
  for (int64_t t = 0; t < rows; ++t) {
    const T lse = log_sum_exp(logits + t * n_experts, n_experts);
    total += double(lse) * double(lse);
    const T c = static_cast<T>(2 * scale) * lse;
    for (int e = 0; e < n_experts; ++e) dlogits[t * n_experts + e] = c * probs[t * n_experts + e];
  }
  return total;
}

#define FINEMOE_ROUTER(T)                                                                               \
  template void router_forward<T>(const T*, const T*, int64_t, int, int, T*, T*);                       \
  template void router_backward<T>(const T*, const T*, const T*, const T*, T*, int64_t, int, int, T*, T*); \
  template double router_z_loss<T>(const T*, const T*, int64_t, int, double, T*);
FINEMOE_ROUTER(float)
FINEMOE_ROUTER(double)
#undef FINEMOE_ROUTER

}  // namespace finemoe::moe
