#include "backend/cpu/layernorm.h"

#include <algorithm>
#include <cmath>

namespace finemoe::cpu {

template <typename T>
void layernorm_forward(T* out, T* mean, T* rstd, const T* inp, const T* weight, const T* bias,
                       int64_t rows, int cols, T eps) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const T* x = inp + r * cols;
    // Row statistics in double: a two-pass mean/variance that float32 rows agree with to rounding.
    double m = 0;
    for (int i = 0; i < cols; ++i) m += x[i];
    m /= cols;
    double v = 0;
    for (int i = 0; i < cols; ++i) {
      const double d = x[i] - m;
      v += d * d;
    }
    v /= cols;
    const double s = 1.0 / std::sqrt(v + static_cast<double>(eps));
    T* y = out + r * cols;
    for (int i = 0; i < cols; ++i) y[i] = static_cast<T>((x[i] - m) * s) * weight[i] + bias[i];
    mean[r] = static_cast<T>(m);
    rstd[r] = static_cast<T>(s);
  }
}

template <typename T>
void layernorm_backward(T* dinp, T* dweight, T* dbias, const T* dout, const T* inp, const T* weight,
                        const T* mean, const T* rstd, int64_t rows, int cols) {
  // dinp, row-parallel: with n = normalised input and g = weight * dout,
  // dx = rstd * (g - mean(g) - n * mean(g * n)).
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const T* x = inp + r * cols;
    const T* dy = dout + r * cols;
    const T m = mean[r], s = rstd[r];
    T g_mean = 0, gn_mean = 0;
    for (int i = 0; i < cols; ++i) {
      const T g = weight[i] * dy[i];
      g_mean += g;
      gn_mean += g * (x[i] - m) * s;
    }
    g_mean /= cols;
    gn_mean /= cols;
    T* dx = dinp + r * cols;
    for (int i = 0; i < cols; ++i) {
      const T n = (x[i] - m) * s;
      dx[i] += (weight[i] * dy[i] - g_mean - n * gn_mean) * s;
    }
  }
  // dweight and dbias, column-parallel in chunks so each thread owns its outputs (no reduction
  // buffers, deterministic order) while still reading rows contiguously.
  constexpr int kChunk = 64;
  const int chunks = (cols + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static)
  for (int c = 0; c < chunks; ++c) {
    const int begin = c * kChunk, end = std::min(cols, begin + kChunk);
    for (int64_t r = 0; r < rows; ++r) {
      const T* x = inp + r * cols;
      const T* dy = dout + r * cols;
      const T m = mean[r], s = rstd[r];
      for (int i = begin; i < end; ++i) {
        dbias[i] += dy[i];
        dweight[i] += (x[i] - m) * s * dy[i];
      }
    }
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
