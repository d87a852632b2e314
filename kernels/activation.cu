#include "kernels/activation.h"
#include "kernels/cuda_check.h"
#include "kernels/device_util.cuh"

namespace finemoe::cuda {
namespace {
using namespace detail;
constexpr float kInvSqrt2 = 0.70710678118654752440f;
constexpr float kInvSqrt2Pi = 0.39894228040143267794f;

template <typename T, bool Gelu>
__global__ void forward_kernel(T* out, const T* inp, int64_t n) {
  for (int64_t i = thread_id(); i < n; i += thread_count()) {
    const float x = to_float(inp[i]);
    const float y = Gelu ? 0.5f * x * (1.0f + erff(x * kInvSqrt2)) : (x > 0.0f ? x : 0.0f);
    out[i] = from_float<T>(y);
  }
}

template <typename T, bool Gelu>
__global__ void backward_kernel(T* dinp, const T* inp, const T* dout, int64_t n) {
  for (int64_t i = thread_id(); i < n; i += thread_count()) {
    const float x = to_float(inp[i]), dy = to_float(dout[i]);
    float dx;
    if (Gelu) {  // d/dx [x Phi(x)] = Phi(x) + x phi(x)
      const float cdf = 0.5f * (1.0f + erff(x * kInvSqrt2));
      const float pdf = kInvSqrt2Pi * expf(-0.5f * x * x);
      dx = (cdf + x * pdf) * dy;
    } else {
      dx = x > 0.0f ? dy : 0.0f;
    }
    dinp[i] = from_float<T>(dx);
  }
}
}  // namespace

template <typename T>
void activation_forward(T* out, const T* inp, int64_t n, cpu::Activation a, cudaStream_t stream) {
  if (n == 0) return;
  if (a == cpu::Activation::gelu)
    forward_kernel<T, true><<<grid_for(n), kThreads, 0, stream>>>(out, inp, n);
  else
    forward_kernel<T, false><<<grid_for(n), kThreads, 0, stream>>>(out, inp, n);
  CUDA_CHECK_LAUNCH();
}

template <typename T>
void activation_backward(T* dinp, const T* inp, const T* dout, int64_t n, cpu::Activation a,
                         cudaStream_t stream) {
  if (n == 0) return;
  if (a == cpu::Activation::gelu)
    backward_kernel<T, true><<<grid_for(n), kThreads, 0, stream>>>(dinp, inp, dout, n);
  else
    backward_kernel<T, false><<<grid_for(n), kThreads, 0, stream>>>(dinp, inp, dout, n);
  CUDA_CHECK_LAUNCH();
}

#define FINEMOE_ACTIVATION(T)                                                                     \
  template void activation_forward<T>(T*, const T*, int64_t, cpu::Activation, cudaStream_t);      \
  template void activation_backward<T>(T*, const T*, const T*, int64_t, cpu::Activation, cudaStream_t);
FINEMOE_ACTIVATION(float)
FINEMOE_ACTIVATION(__nv_bfloat16)
#undef FINEMOE_ACTIVATION

}  // namespace finemoe::cuda
