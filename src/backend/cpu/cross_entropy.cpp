#include "backend/cpu/cross_entropy.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "backend/cpu/vector_dispatch.h"

namespace finemoe::cpu {
namespace {
// One row: returns log(sum exp(z - max)) - (z[target] - max); g (may alias z, may be null) gets
// dscale * (softmax(z) - onehot(target)). Two passes over the row (max; exp + sum) plus a scale.
inline __attribute__((always_inline)) double row_body(float* g, const float* z, int32_t target, int vocab,
                                                      float dscale) {
  float mx = z[0];
#pragma omp simd reduction(max : mx)
  for (int i = 0; i < vocab; ++i) mx = z[i] > mx ? z[i] : mx;
  const float zt = z[target];
  float sum = 0;
  if (g) {
#pragma omp simd reduction(+ : sum)
    for (int i = 0; i < vocab; ++i) {
      const float e = exp_nonpositive(z[i] - mx);
      g[i] = e;
      sum += e;
    }
    const float a = dscale / sum;
#pragma omp simd
    for (int i = 0; i < vocab; ++i) g[i] *= a;
    g[target] -= dscale;
  } else {
#pragma omp simd reduction(+ : sum)
    for (int i = 0; i < vocab; ++i) sum += exp_nonpositive(z[i] - mx);
  }
  return static_cast<double>(std::log(sum) - (zt - mx));
}

FINEMOE_AVX2 double row_avx2(float* g, const float* z, int32_t target, int vocab, float dscale) {
  return row_body(g, z, target, vocab, dscale);
}
double row_plain(float* g, const float* z, int32_t target, int vocab, float dscale) {
  return row_body(g, z, target, vocab, dscale);
}
}  // namespace

template <typename T>
double softmax_cross_entropy(T* dlogits, const T* logits, const int32_t* targets, int64_t rows, int vocab,
                             T dscale) {
  double loss = 0;
#pragma omp parallel for schedule(static) reduction(+ : loss)
  for (int64_t r = 0; r < rows; ++r) {
    const T* z = logits + r * vocab;
    T mx = z[0];
    for (int i = 1; i < vocab; ++i) mx = std::max(mx, z[i]);
    T sum = 0;
    for (int i = 0; i < vocab; ++i) sum += std::exp(z[i] - mx);
    const T log_sum = std::log(sum);
    const int32_t target = targets[r];
    loss += static_cast<double>(log_sum - (z[target] - mx));
    if (dlogits) {
      // z is read before each element is written, so dlogits may be logits itself.
      T* g = dlogits + r * vocab;
      const T inv = T(1) / sum;
      for (int i = 0; i < vocab; ++i) g[i] = dscale * std::exp(z[i] - mx) * inv;
      g[target] -= dscale;
    }
  }
  return loss;
}

// float: the vectorised row (AVX2 + FMA when the CPU has them), one exp per logit instead of two.
template <>
double softmax_cross_entropy<float>(float* dlogits, const float* logits, const int32_t* targets, int64_t rows,
                                    int vocab, float dscale) {
  const auto row = use_avx2() ? row_avx2 : row_plain;
  double loss = 0;
#pragma omp parallel for schedule(static) reduction(+ : loss)
  for (int64_t r = 0; r < rows; ++r)
    loss += row(dlogits ? dlogits + r * vocab : nullptr, logits + r * vocab, targets[r], vocab, dscale);
  return loss;
}

template double softmax_cross_entropy<double>(double*, const double*, const int32_t*, int64_t, int, double);

}  // namespace finemoe::cpu
