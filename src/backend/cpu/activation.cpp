#include "backend/cpu/activation.h"

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "backend/cpu/vector_dispatch.h"

namespace finemoe::cpu {
namespace {
constexpr double kInvSqrt2 = 0.70710678118654752440;
constexpr double kInvSqrt2Pi = 0.39894228040143267794;
constexpr double kSqrt2OverPi = 0.79788456080286535588;  // sqrt(2 / pi)
constexpr double kGeluTanhCubic = 0.044715;
constexpr int64_t kChunk = 1 << 14;  // elements per OpenMP work item

// relu: out may alias inp, dinp may alias dout (each element is read before it is written).
template <typename T>
inline __attribute__((always_inline)) void relu_fwd(T* out, const T* inp, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) out[i] = inp[i] > T(0) ? inp[i] : T(0);
}
template <typename T>
inline __attribute__((always_inline)) void relu_bwd(T* dinp, const T* inp, const T* dout, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) dinp[i] = inp[i] > T(0) ? dout[i] : T(0);
}
FINEMOE_AVX2 void relu_fwd_avx2(float* out, const float* inp, int64_t n) { relu_fwd(out, inp, n); }
FINEMOE_AVX2 void relu_bwd_avx2(float* dinp, const float* inp, const float* dout, int64_t n) {
  relu_bwd(dinp, inp, dout, n);
}

template <typename T>
void relu_forward_any(T* out, const T* inp, int64_t n) {
  auto f = relu_fwd<T>;
  if constexpr (std::is_same_v<T, float>) {
    if (use_avx2()) f = relu_fwd_avx2;
  }
  if (n <= kChunk) return f(out, inp, n);  // also the common case inside the experts' OpenMP loop
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < n; c += kChunk) f(out + c, inp + c, std::min(kChunk, n - c));
}
template <typename T>
void relu_backward_any(T* dinp, const T* inp, const T* dout, int64_t n) {
  auto f = relu_bwd<T>;
  if constexpr (std::is_same_v<T, float>) {
    if (use_avx2()) f = relu_bwd_avx2;
  }
  if (n <= kChunk) return f(dinp, inp, dout, n);
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < n; c += kChunk) f(dinp + c, inp + c, dout + c, std::min(kChunk, n - c));
}
}  // namespace

const char* activation_name(Activation a) {
  switch (a) {
    case Activation::relu: return "relu";
    case Activation::gelu: return "gelu";
    case Activation::gelu_tanh: return "gelu_tanh";
  }
  return "?";
}

template <typename T>
void activation_forward(T* out, const T* inp, int64_t n, Activation a) {
  switch (a) {
    case Activation::relu:
      relu_forward_any(out, inp, n);
      return;
    case Activation::gelu:
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < n; ++i) {
        const T x = inp[i];
        out[i] = T(0.5) * x * (T(1) + std::erf(x * T(kInvSqrt2)));
      }
      return;
    case Activation::gelu_tanh:
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < n; ++i) {
        const T x = inp[i];
        out[i] = T(0.5) * x * (T(1) + std::tanh(T(kSqrt2OverPi) * (x + T(kGeluTanhCubic) * x * x * x)));
      }
      return;
  }
}

template <typename T>
void activation_backward(T* dinp, const T* inp, const T* dout, int64_t n, Activation a) {
  switch (a) {
    case Activation::relu:
      relu_backward_any(dinp, inp, dout, n);
      return;
    case Activation::gelu:
      // d/dx [x Phi(x)] = Phi(x) + x phi(x).
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < n; ++i) {
        const T x = inp[i];
        const T cdf = T(0.5) * (T(1) + std::erf(x * T(kInvSqrt2)));
        const T pdf = T(kInvSqrt2Pi) * std::exp(T(-0.5) * x * x);
        dinp[i] = (cdf + x * pdf) * dout[i];
      }
      return;
    case Activation::gelu_tanh:
      // With u = sqrt(2/pi) (x + 0.044715 x^3) and t = tanh(u):
      // d/dx [0.5 x (1 + t)] = 0.5 (1 + t) + 0.5 x (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2).
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < n; ++i) {
        const T x = inp[i];
        const T t = std::tanh(T(kSqrt2OverPi) * (x + T(kGeluTanhCubic) * x * x * x));
        const T du = T(kSqrt2OverPi) * (T(1) + T(3 * kGeluTanhCubic) * x * x);
        dinp[i] = (T(0.5) * (T(1) + t) + T(0.5) * x * (T(1) - t * t) * du) * dout[i];
      }
      return;
  }
}

template void activation_forward<float>(float*, const float*, int64_t, Activation);
template void activation_forward<double>(double*, const double*, int64_t, Activation);
template void activation_backward<float>(float*, const float*, const float*, int64_t, Activation);
template void activation_backward<double>(double*, const double*, const double*, int64_t, Activation);

}  // namespace finemoe::cpu
