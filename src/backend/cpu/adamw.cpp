#include "backend/cpu/adamw.h"

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "backend/cpu/vector_dispatch.h"

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#endif

namespace finemoe::cpu {
namespace {
constexpr int64_t kChunk = 1 << 14;  // elements per OpenMP work item

template <typename T>
struct Coefficients {
  T b1, b2, decay, step, inv_sqrt_bc2, eps, scale;
};

template <typename T>
inline __attribute__((always_inline)) void update_scalar(T* param, const T* grad, T* m, T* v, int64_t n,
                                                         const Coefficients<T>& c) {
  for (int64_t i = 0; i < n; ++i) {
    const T g = grad[i] * c.scale;
    m[i] = c.b1 * m[i] + (T(1) - c.b1) * g;
    v[i] = c.b2 * v[i] + (T(1) - c.b2) * g * g;
    param[i] = param[i] * c.decay - c.step * m[i] / (std::sqrt(v[i]) * c.inv_sqrt_bc2 + c.eps);
  }
}

template <typename T>
inline __attribute__((always_inline)) double squares_body(const T* x, int64_t n) {
  double total = 0;
#pragma omp simd reduction(+ : total)
  for (int64_t i = 0; i < n; ++i) total += double(x[i]) * double(x[i]);
  return total;
}

#if defined(__GNUC__) && defined(__x86_64__)
// The same formula 8 lanes at a time (sqrt and division are the IEEE ones, as in the scalar loop).
__attribute__((target("avx2,fma"))) void update_avx2(float* param, const float* grad, float* m, float* v, int64_t n,
                                                     const Coefficients<float>& c) {
  const __m256 b1 = _mm256_set1_ps(c.b1), b2 = _mm256_set1_ps(c.b2), one_b1 = _mm256_set1_ps(1.0f - c.b1),
               one_b2 = _mm256_set1_ps(1.0f - c.b2), decay = _mm256_set1_ps(c.decay), step = _mm256_set1_ps(c.step),
               ibc2 = _mm256_set1_ps(c.inv_sqrt_bc2), eps = _mm256_set1_ps(c.eps), scale = _mm256_set1_ps(c.scale);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 g = _mm256_mul_ps(_mm256_loadu_ps(grad + i), scale);
    const __m256 mi = _mm256_fmadd_ps(b1, _mm256_loadu_ps(m + i), _mm256_mul_ps(one_b1, g));
    const __m256 vi = _mm256_fmadd_ps(b2, _mm256_loadu_ps(v + i), _mm256_mul_ps(_mm256_mul_ps(one_b2, g), g));
    const __m256 den = _mm256_fmadd_ps(_mm256_sqrt_ps(vi), ibc2, eps);
    const __m256 p = _mm256_fmsub_ps(_mm256_loadu_ps(param + i), decay, _mm256_div_ps(_mm256_mul_ps(step, mi), den));
    _mm256_storeu_ps(m + i, mi);
    _mm256_storeu_ps(v + i, vi);
    _mm256_storeu_ps(param + i, p);
  }
  update_scalar(param + i, grad + i, m + i, v + i, n - i, c);
}
__attribute__((target("avx2,fma"))) double squares_avx2(const float* x, int64_t n) { return squares_body(x, n); }
#else
void update_avx2(float*, const float*, float*, float*, int64_t, const Coefficients<float>&) {}
double squares_avx2(const float*, int64_t) { return 0; }
#endif
}  // namespace

template <typename T>
void adamw_update(T* param, const T* grad, T* m, T* v, int64_t n, const AdamWStep& s) {
  const double bc1 = 1.0 - std::pow(s.beta1, double(s.t));
  const double bc2 = 1.0 - std::pow(s.beta2, double(s.t));
  const Coefficients<T> c{T(s.beta1), T(s.beta2), T(1.0 - s.lr * s.weight_decay), T(s.lr / bc1),
                          T(1.0 / std::sqrt(bc2)), T(s.eps), T(s.grad_scale)};
  const bool vec = std::is_same_v<T, float> && use_avx2();
#pragma omp parallel for schedule(static)
  for (int64_t i0 = 0; i0 < n; i0 += kChunk) {
    const int64_t len = std::min(kChunk, n - i0);
    if constexpr (std::is_same_v<T, float>) {
      if (vec) {
        update_avx2(param + i0, grad + i0, m + i0, v + i0, len, c);
        continue;
      }
    }
    update_scalar(param + i0, grad + i0, m + i0, v + i0, len, c);
  }
}

template <typename T>
double sum_of_squares(const T* x, int64_t n) {
  const bool vec = std::is_same_v<T, float> && use_avx2();
  double total = 0;
#pragma omp parallel for reduction(+ : total) schedule(static)
  for (int64_t i0 = 0; i0 < n; i0 += kChunk) {
    const int64_t len = std::min(kChunk, n - i0);
    if constexpr (std::is_same_v<T, float>) {
      if (vec) {
        total += squares_avx2(x + i0, len);
        continue;
      }
    }
    total += squares_body(x + i0, len);
  }
  return total;
}

template void adamw_update<float>(float*, const float*, float*, float*, int64_t, const AdamWStep&);
template void adamw_update<double>(double*, const double*, double*, double*, int64_t, const AdamWStep&);
template double sum_of_squares<float>(const float*, int64_t);
template double sum_of_squares<double>(const double*, int64_t);

}  // namespace finemoe::cpu
