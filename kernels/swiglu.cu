#include "kernels/cuda_check.h"
#include "kernels/device_util.cuh"
#include "kernels/swiglu.h"

namespace finemoe::cuda {
namespace {
using namespace detail;

// One thread per output element i = r * hidden + j; its gate and up sit in row r of the input.
template <typename T>
__global__ void forward_kernel(T* out, const T* inp, int64_t rows, int hidden) {
  const int64_t n = rows * hidden;
  for (int64_t i = thread_id(); i < n; i += thread_count()) {
    const int64_t r = i / hidden, j = i - r * hidden;
    const float g = to_float(inp[r * 2 * hidden + j]), u = to_float(inp[r * 2 * hidden + hidden + j]);
    out[i] = from_float<T>(g / (1.0f + expf(-g)) * u);
  }
}

template <typename T>
__global__ void backward_kernel(T* dinp, const T* inp, const T* dout, int64_t rows, int hidden) {
  const int64_t n = rows * hidden;
  for (int64_t i = thread_id(); i < n; i += thread_count()) {
    const int64_t r = i / hidden, j = i - r * hidden;
    const int64_t gi = r * 2 * hidden + j, ui = gi + hidden;
    const float g = to_float(inp[gi]), u = to_float(inp[ui]), dy = to_float(dout[i]);
    const float s = 1.0f / (1.0f + expf(-g));
    dinp[ui] = from_float<T>(dy * g * s);
    dinp[gi] = from_float<T>(dy * u * s * (1.0f + g * (1.0f - s)));
  }
}
}  // namespace

template <typename T>
void swiglu_forward(T* out, const T* inp, int64_t rows, int hidden, cudaStream_t stream) {
  const int64_t n = rows * hidden;
  if (n == 0) return;
  forward_kernel<T><<<grid_for(n), kThreads, 0, stream>>>(out, inp, rows, hidden);
  CUDA_CHECK_LAUNCH();
}

template <typename T>
void swiglu_backward(T* dinp, const T* inp, const T* dout, int64_t rows, int hidden, cudaStream_t stream) {
  const int64_t n = rows * hidden;
  if (n == 0) return;
  backward_kernel<T><<<grid_for(n), kThreads, 0, stream>>>(dinp, inp, dout, rows, hidden);
  CUDA_CHECK_LAUNCH();
}

#define FINEMOE_SWIGLU(T)                                                      \
  template void swiglu_forward<T>(T*, const T*, int64_t, int, cudaStream_t); \
  template void swiglu_backward<T>(T*, const T*, const T*, int64_t, int, cudaStream_t);
FINEMOE_SWIGLU(float)
FINEMOE_SWIGLU(__nv_bfloat16)
#undef FINEMOE_SWIGLU

}  // namespace finemoe::cuda
