#include "backend/cpu/cross_entropy.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace finemoe::cpu {
namespace {
#if defined(__GNUC__) && defined(__x86_64__)
#define FINEMOE_AVX2 __attribute__((target("avx2,fma")))
bool use_avx2() {
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return yes;
}
#else
#define FINEMOE_AVX2
bool use_avx2() { return false; }
#endif

// exp for x <= 0 (shifted logits), vectorisable: Cephes expf (range reduction by ln 2 in two parts,
// degree-6 polynomial, 2^n from the exponent bits); within 2 ulp of expf, 0 below -87.3.
inline __attribute__((always_inline)) float exp_nonpositive(float x) {
  const float xc = x < -87.3f ? -87.3f : x;
  const float n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round(x / ln 2)
  float r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return x < -87.3f ? 0.0f : p * scale;
}

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
