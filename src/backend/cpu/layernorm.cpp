#include "backend/cpu/layernorm.h"

#include <algorithm>
#include <cmath>

#include "backend/cpu/vector_dispatch.h"

namespace finemoe::cpu {
namespace {
template <typename T>
inline __attribute__((always_inline)) void forward_row(T* y, T* mean, T* rstd, const T* x, const T* weight,
                                                       const T* bias, int cols, T eps) {
  // Row statistics in double: a two-pass mean/variance that float32 rows agree with to rounding.
  double m = 0;
#pragma omp simd reduction(+ : m)
  for (int i = 0; i < cols; ++i) m += x[i];
  m /= cols;
  double v = 0;
#pragma omp simd reduction(+ : v)
  for (int i = 0; i < cols; ++i) {
    const double d = x[i] - m;
    v += d * d;
  }
  v /= cols;
  const double s = 1.0 / std::sqrt(v + static_cast<double>(eps));
#pragma omp simd
  for (int i = 0; i < cols; ++i) y[i] = static_cast<T>((x[i] - m) * s) * weight[i] + bias[i];
  *mean = static_cast<T>(m);
  *rstd = static_cast<T>(s);
}

// dx += rstd * (g - mean(g) - n * mean(g * n)), n = normalised input, g = weight * dout.
template <typename T>
inline __attribute__((always_inline)) void backward_row(T* dx, const T* dy, const T* x, const T* weight, T m, T s,
                                                        int cols) {
  T g_mean = 0, gn_mean = 0;
#pragma omp simd reduction(+ : g_mean, gn_mean)
  for (int i = 0; i < cols; ++i) {
    const T g = weight[i] * dy[i];
    g_mean += g;
    gn_mean += g * (x[i] - m) * s;
  }
  g_mean /= cols;
  gn_mean /= cols;
#pragma omp simd
  for (int i = 0; i < cols; ++i) {
    const T n = (x[i] - m) * s;
    dx[i] += (weight[i] * dy[i] - g_mean - n * gn_mean) * s;
  }
}

// dweight and dbias over rows [0, rows), columns [begin, end).
template <typename T>
inline __attribute__((always_inline)) void param_grad_cols(T* dweight, T* dbias, const T* dout, const T* inp,
                                                           const T* mean, const T* rstd, int64_t rows, int cols,
                                                           int begin, int end) {
  for (int64_t r = 0; r < rows; ++r) {
    const T* x = inp + r * cols;
    const T* dy = dout + r * cols;
    const T m = mean[r], s = rstd[r];
#pragma omp simd
    for (int i = begin; i < end; ++i) {
      dbias[i] += dy[i];
      dweight[i] += (x[i] - m) * s * dy[i];
    }
  }
}

FINEMOE_AVX2 void forward_row_avx2(float* y, float* mean, float* rstd, const float* x, const float* w, const float* b,
                                   int cols, float eps) {
  forward_row(y, mean, rstd, x, w, b, cols, eps);
}
FINEMOE_AVX2 void backward_row_avx2(float* dx, const float* dy, const float* x, const float* w, float m, float s,
                                    int cols) {
  backward_row(dx, dy, x, w, m, s, cols);
}
FINEMOE_AVX2 void param_grad_cols_avx2(float* dw, float* db, const float* dout, const float* inp, const float* mean,
                                       const float* rstd, int64_t rows, int cols, int begin, int end) {
  param_grad_cols(dw, db, dout, inp, mean, rstd, rows, cols, begin, end);
}

template <typename T>
struct Kernels {
  void (*forward)(T*, T*, T*, const T*, const T*, const T*, int, T) = forward_row<T>;
  void (*backward)(T*, const T*, const T*, const T*, T, T, int) = backward_row<T>;
  void (*param_grad)(T*, T*, const T*, const T*, const T*, const T*, int64_t, int, int, int) = param_grad_cols<T>;
};
template <typename T>
Kernels<T> kernels() {
  return {};
}
template <>
Kernels<float> kernels<float>() {
  Kernels<float> k;
  if (use_avx2()) {
    k.forward = forward_row_avx2;
    k.backward = backward_row_avx2;
    k.param_grad = param_grad_cols_avx2;
  }
  return k;
}
}  // namespace

template <typename T>
void layernorm_forward(T* out, T* mean, T* rstd, const T* inp, const T* weight, const T* bias,
                       int64_t rows, int cols, T eps) {
  const Kernels<T> k = kernels<T>();
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r)
    k.forward(out + r * cols, mean + r, rstd + r, inp + r * cols, weight, bias, cols, eps);
}

template <typename T>
void layernorm_backward(T* dinp, T* dweight, T* dbias, const T* dout, const T* inp, const T* weight,
                        const T* mean, const T* rstd, int64_t rows, int cols) {
  const Kernels<T> k = kernels<T>();
  // One parallel region: dinp row-parallel, then (after a barrier) dweight and dbias column-parallel in chunks so
  // each thread owns its outputs (no reduction buffers, deterministic order) while still reading
  // rows contiguously.
  constexpr int kChunk = 64;
  const int chunks = (cols + kChunk - 1) / kChunk;
#pragma omp parallel
  {
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r)
      k.backward(dinp + r * cols, dout + r * cols, inp + r * cols, weight, mean[r], rstd[r], cols);
#pragma omp for schedule(static)
    for (int c = 0; c < chunks; ++c)
      k.param_grad(dweight, dbias, dout, inp, mean, rstd, rows, cols, c * kChunk, std::min(cols, (c + 1) * kChunk));
  }
}

template void layernorm_forward<float>(float*, float*, float*, const float*, const float*, const float*,
                                       int64_t, int, float);
template void layernorm_forward<double>(double*, double*, double*, const double*, const double*,
                                        const double*, int64_t, int, double);
template void layernorm_backward<float>(float*, float*, float*, const float*, const float*, const float*,
                                        const float*, const float*, int64_t, int);
template void layernorm_backward<double>(double*, double*, double*, const double*, const double*,
                                         const double*, const double*, const double*, int64_t, int);

}  // namespace finemoe::cpu
