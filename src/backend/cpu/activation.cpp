#include "backend/cpu/activation.h"

#include <cmath>

namespace finemoe::cpu {
namespace {
constexpr double kInvSqrt2 = 0.70710678118654752440;
constexpr double kInvSqrt2Pi = 0.39894228040143267794;
}  // namespace

template <typename T>
void activation_forward(T* out, const T* inp, int64_t n, Activation a) {
  if (a == Activation::relu) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) out[i] = inp[i] > T(0) ? inp[i] : T(0);
  } else {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      const T x = inp[i];
      out[i] = T(0.5) * x * (T(1) + std::erf(x * T(kInvSqrt2)));
    }
  }
}

template <typename T>
void activation_backward(T* dinp, const T* inp, const T* dout, int64_t n, Activation a) {
  if (a == Activation::relu) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) dinp[i] = inp[i] > T(0) ? dout[i] : T(0);
  } else {
    // d/dx [x Phi(x)] = Phi(x) + x phi(x).
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      const T x = inp[i];
      const T cdf = T(0.5) * (T(1) + std::erf(x * T(kInvSqrt2)));
      const T pdf = T(kInvSqrt2Pi) * std::exp(T(-0.5) * x * x);
      dinp[i] = (cdf + x * pdf) * dout[i];
    }
  }
}

template void activation_forward<float>(float*, const float*, int64_t, Activation);
template void activation_forward<double>(double*, const double*, int64_t, Activation);
template void activation_backward<float>(float*, const float*, const float*, int64_t, Activation);
template void activation_backward<double>(double*, const double*, const double*, int64_t, Activation);

}  // namespace finemoe::cpu
