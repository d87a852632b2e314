#include "kernels/cuda_check.h"
#include "kernels/device_util.cuh"
#include "kernels/permute.h"
#include "kernels/sorted_scatter.h"

namespace finemoe::cuda {
namespace {
using namespace detail;

template <typename T>
__global__ void gather_kernel(const T* x, const int32_t* rows, int64_t n, int width, T* out) {
  const int64_t total = n * width;
  for (int64_t idx = thread_id(); idx < total; idx += thread_count()) {
    const int64_t c = idx / width;
    out[idx] = x[int64_t(rows[c]) * width + idx % width];
  }
}

// One warp per copy (the gate gradient is a dot product over the row).
template <typename T>
__global__ void combine_backward_kernel(const T* dy, const T* back, const int32_t* rows, const float* gate,
                                        int64_t n, int width, T* dback, float* dgate) {
  const int lane = threadIdx.x % 32;
  for (int64_t c = warp_id(); c < n; c += warp_count()) {
    const T* d = dy + int64_t(rows[c]) * width;
    const T* b = back + c * width;
    T* db = dback + c * width;
    const float g = gate[c];
    float dot = 0;
    for (int i = lane; i < width; i += 32) {
      const float di = to_float(d[i]);
      db[i] = from_float<T>(g * di);
      dot += di * to_float(b[i]);
    }
    dot = warp_sum(dot);
    if (lane == 0) dgate[c] = dot;
  }
}

}  // namespace

template <typename T>
void gather_rows(const T* x, const int32_t* rows, int64_t n, int width, T* out, cudaStream_t stream) {
  if (n == 0 || width == 0) return;
  gather_kernel<T><<<grid_for(n * width), kThreads, 0, stream>>>(x, rows, n, width, out);
  CUDA_CHECK_LAUNCH();
}

template <typename T>
void combine_rows(const T* back, const int32_t* rows, const float* gate, int64_t n, int width, float* y,
                  cudaStream_t stream) {
  sorted_scatter_add<T>(back, rows, gate, n, width, y, stream);
}

template <typename T>
void combine_rows_backward(const T* dy, const T* back, const int32_t* rows, const float* gate, int64_t n,
                           int width, T* dback, float* dgate, cudaStream_t stream) {
  if (n == 0) return;
  combine_backward_kernel<T><<<grid_for_rows(n), kThreads, 0, stream>>>(dy, back, rows, gate, n, width, dback,
                                                                         dgate);
  CUDA_CHECK_LAUNCH();
}

template <typename T>
void scatter_add_rows(const T* dout, const int32_t* rows, int64_t n, int width, float* dx, cudaStream_t stream) {
  sorted_scatter_add<T>(dout, rows, nullptr, n, width, dx, stream);
}

#define FINEMOE_PERMUTE(T)                                                                                  \
  template void gather_rows<T>(const T*, const int32_t*, int64_t, int, T*, cudaStream_t);                   \
  template void combine_rows<T>(const T*, const int32_t*, const float*, int64_t, int, float*, cudaStream_t); \
  template void combine_rows_backward<T>(const T*, const T*, const int32_t*, const float*, int64_t, int, T*, \
                                         float*, cudaStream_t);                                             \
  template void scatter_add_rows<T>(const T*, const int32_t*, int64_t, int, float*, cudaStream_t);
FINEMOE_PERMUTE(float)
FINEMOE_PERMUTE(__nv_bfloat16)
#undef FINEMOE_PERMUTE

}  // namespace finemoe::cuda
