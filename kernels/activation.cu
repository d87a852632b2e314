#include "kernels/activation.h"
#include "kernels/cuda_check.h"
#include "kernels/device_util.cuh"

namespace finemoe::cuda {
namespace {
using namespace detail;
using cpu::Activation;
constexpr float kInvSqrt2 = 0.70710678118654752440f;
constexpr float kInvSqrt2Pi = 0.39894228040143267794f;
constexpr float kSqrt2OverPi = 0.79788456080286535588f;
constexpr float kGeluTanhCubic = 0.044715f;

template <Activation A>
__device__ __forceinline__ float activate(float x) {
  if constexpr (A == Activation::gelu) return 0.5f * x * (1.0f + erff(x * kInvSqrt2));
  if constexpr (A == Activation::gelu_tanh)
    return 0.5f * x * (1.0f + tanhf(kSqrt2OverPi * (x + kGeluTanhCubic * x * x * x)));
  return x > 0.0f ? x : 0.0f;
}

// act'(x); relu'(0) = 0.
template <Activation A>
__device__ __forceinline__ float derivative(float x) {
  if constexpr (A == Activation::gelu) {  // d/dx [x Phi(x)] = Phi(x) + x phi(x)
    const float cdf = 0.5f * (1.0f + erff(x * kInvSqrt2));
    const float pdf = kInvSqrt2Pi * expf(-0.5f * x * x);
    return cdf + x * pdf;
  }
  if constexpr (A == Activation::gelu_tanh) {  // 0.5 (1 + t) + 0.5 x (1 - t^2) u'(x)
    const float t = tanhf(kSqrt2OverPi * (x + kGeluTanhCubic * x * x * x));
    const float du = kSqrt2OverPi * (1.0f + 3.0f * kGeluTanhCubic * x * x);
    return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * du;
  }
  return x > 0.0f ? 1.0f : 0.0f;
}

template <typename TOut, typename TIn, Activation A>
__global__ void forward_kernel(TOut* out, const TIn* inp, int64_t n) {
  for (int64_t i = thread_id(); i < n; i += thread_count()) out[i] = from_float<TOut>(activate<A>(to_float(inp[i])));
}

template <typename TGrad, typename TIn, Activation A>
__global__ void backward_kernel(TGrad* dinp, const TIn* inp, const TGrad* dout, int64_t n) {
  for (int64_t i = thread_id(); i < n; i += thread_count()) {
    const float x = to_float(inp[i]), dy = to_float(dout[i]);
    // relu passes dy itself (not 1 * dy): a NaN gradient where x <= 0 stays masked, as on the CPU.
    const float dx = A == Activation::relu ? (x > 0.0f ? dy : 0.0f) : derivative<A>(x) * dy;
    dinp[i] = from_float<TGrad>(dx);
  }
}
}  // namespace

template <typename TOut, typename TIn>
void activation_forward_mixed(TOut* out, const TIn* inp, int64_t n, Activation a, cudaStream_t stream) {
  if (n == 0) return;
  switch (a) {
    case Activation::relu:
      forward_kernel<TOut, TIn, Activation::relu><<<grid_for(n), kThreads, 0, stream>>>(out, inp, n);
      break;
    case Activation::gelu:
      forward_kernel<TOut, TIn, Activation::gelu><<<grid_for(n), kThreads, 0, stream>>>(out, inp, n);
      break;
    case Activation::gelu_tanh:
      forward_kernel<TOut, TIn, Activation::gelu_tanh><<<grid_for(n), kThreads, 0, stream>>>(out, inp, n);
      break;
  }
  CUDA_CHECK_LAUNCH();
}

template <typename TGrad, typename TIn>
void activation_backward_mixed(TGrad* dinp, const TIn* inp, const TGrad* dout, int64_t n, Activation a,
                               cudaStream_t stream) {
  if (n == 0) return;
  switch (a) {
    case Activation::relu:
      backward_kernel<TGrad, TIn, Activation::relu><<<grid_for(n), kThreads, 0, stream>>>(dinp, inp, dout, n);
      break;
    case Activation::gelu:
      backward_kernel<TGrad, TIn, Activation::gelu><<<grid_for(n), kThreads, 0, stream>>>(dinp, inp, dout, n);
      break;
    case Activation::gelu_tanh:
      backward_kernel<TGrad, TIn, Activation::gelu_tanh><<<grid_for(n), kThreads, 0, stream>>>(dinp, inp, dout, n);
      break;
  }
  CUDA_CHECK_LAUNCH();
}

template <typename T>
void activation_forward(T* out, const T* inp, int64_t n, Activation a, cudaStream_t stream) {
  activation_forward_mixed<T, T>(out, inp, n, a, stream);
}

template <typename T>
void activation_backward(T* dinp, const T* inp, const T* dout, int64_t n, Activation a, cudaStream_t stream) {
  activation_backward_mixed<T, T>(dinp, inp, dout, n, a, stream);
}

#define FINEMOE_ACTIVATION(T)                                                                     \
  template void activation_forward<T>(T*, const T*, int64_t, cpu::Activation, cudaStream_t);      \
  template void activation_backward<T>(T*, const T*, const T*, int64_t, cpu::Activation, cudaStream_t);
FINEMOE_ACTIVATION(float)
FINEMOE_ACTIVATION(__nv_bfloat16)
#undef FINEMOE_ACTIVATION

#define FINEMOE_ACTIVATION_MIXED(TOut, TIn)                                                                  \
  template void activation_forward_mixed<TOut, TIn>(TOut*, const TIn*, int64_t, cpu::Activation, cudaStream_t); \
  template void activation_backward_mixed<TOut, TIn>(TOut*, const TIn*, const TOut*, int64_t, cpu::Activation,  \
                                                     cudaStream_t);
FINEMOE_ACTIVATION_MIXED(float, float)
FINEMOE_ACTIVATION_MIXED(float, __nv_bfloat16)
FINEMOE_ACTIVATION_MIXED(__nv_bfloat16, float)
FINEMOE_ACTIVATION_MIXED(__nv_bfloat16, __nv_bfloat16)
#undef FINEMOE_ACTIVATION_MIXED

}  // namespace finemoe::cuda
