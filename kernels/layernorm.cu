#include "kernels/cuda_check.h"
#include "kernels/device_util.cuh"
#include "kernels/layernorm.h"

namespace finemoe::cuda {
namespace {
using namespace detail;

// One warp per row; two passes over the row for the mean and the variance (cache hits).
template <typename T>
__global__ void forward_kernel(T* out, float* mean, float* rstd, const T* inp, const float* weight,
                               const float* bias, int64_t rows, int cols, float eps) {
  const int lane = threadIdx.x % 32;
  for (int64_t r = warp_id(); r < rows; r += warp_count()) {
    const T* x = inp + r * cols;
    float sum = 0;
    for (int i = lane; i < cols; i += 32) sum += to_float(x[i]);
    const float m = warp_sum(sum) / cols;
    float var = 0;
    for (int i = lane; i < cols; i += 32) {
      const float d = to_float(x[i]) - m;
      var += d * d;
    }
    const float s = 1.0f / sqrtf(warp_sum(var) / cols + eps);
    T* y = out + r * cols;
    for (int i = lane; i < cols; i += 32) y[i] = from_float<T>((to_float(x[i]) - m) * s * weight[i] + bias[i]);
    if (lane == 0) {
      mean[r] = m;
      rstd[r] = s;
    }
  }
}

// dx = rstd * (g - mean(g) - n * mean(g * n)) with g = weight * dout and n the normalised input.
template <typename T>
__global__ void input_backward_kernel(T* dinp, const T* dout, const T* inp, const float* weight,
                                      const float* mean, const float* rstd, int64_t rows, int cols) {
  const int lane = threadIdx.x % 32;
  for (int64_t r = warp_id(); r < rows; r += warp_count()) {
    const T* x = inp + r * cols;
    const T* dy = dout + r * cols;
    const float m = mean[r], s = rstd[r];
    float g_sum = 0, gn_sum = 0;
    for (int i = lane; i < cols; i += 32) {
      const float g = weight[i] * to_float(dy[i]);
      g_sum += g;
      gn_sum += g * (to_float(x[i]) - m) * s;
    }
    const float g_mean = warp_sum(g_sum) / cols, gn_mean = warp_sum(gn_sum) / cols;
    T* dx = dinp + r * cols;
    for (int i = lane; i < cols; i += 32) {
      const float n = (to_float(x[i]) - m) * s;
      dx[i] = from_float<T>(to_float(dx[i]) + (weight[i] * to_float(dy[i]) - g_mean - n * gn_mean) * s);
    }
  }
}

// Block (32, 8): 32 columns, 8 row lanes; a grid row covers a slice of the rows. The 8 row lanes
// are summed in shared memory into the slice's partial sums, and sum_partials_kernel adds the
// slices in order: a fixed order, so the same result on every run (no atomics).
constexpr int kRowLanes = 8;
template <typename T>
__global__ void param_backward_kernel(float* partials, const T* dout, const T* inp, const float* mean,
                                      const float* rstd, int64_t rows, int cols) {
  __shared__ float sw[kRowLanes][32], sb[kRowLanes][32];
  const int c = blockIdx.x * 32 + threadIdx.x;
  float dw = 0, db = 0;
  if (c < cols) {
    for (int64_t r = int64_t(blockIdx.y) * kRowLanes + threadIdx.y; r < rows; r += int64_t(gridDim.y) * kRowLanes) {
      const float dy = to_float(dout[r * cols + c]);
      db += dy;
      dw += (to_float(inp[r * cols + c]) - mean[r]) * rstd[r] * dy;
    }
  }
  sw[threadIdx.y][threadIdx.x] = dw;
  sb[threadIdx.y][threadIdx.x] = db;
  __syncthreads();
  if (threadIdx.y == 0 && c < cols) {
    for (int j = 1; j < kRowLanes; ++j) {
      dw += sw[j][threadIdx.x];
      db += sb[j][threadIdx.x];
    }
    partials[int64_t(blockIdx.y) * 2 * cols + c] = dw;
    partials[int64_t(blockIdx.y) * 2 * cols + cols + c] = db;
  }
}

// dweight[c] += the slices' partial sums in slice order, dbias likewise.
__global__ void sum_partials_kernel(float* dweight, float* dbias, const float* partials, int slices, int cols) {
  for (int64_t c = thread_id(); c < cols; c += thread_count()) {
    float dw = 0, db = 0;
    for (int s = 0; s < slices; ++s) {
      dw += partials[int64_t(s) * 2 * cols + c];
      db += partials[int64_t(s) * 2 * cols + cols + c];
    }
    dweight[c] += dw;
    dbias[c] += db;
  }
}
}  // namespace

template <typename T>
void layernorm_forward(T* out, float* mean, float* rstd, const T* inp, const float* weight, const float* bias,
                       int64_t rows, int cols, float eps, cudaStream_t stream) {
  if (rows == 0) return;
  forward_kernel<T><<<grid_for_rows(rows), kThreads, 0, stream>>>(out, mean, rstd, inp, weight, bias, rows,
                                                                   cols, eps);
  CUDA_CHECK_LAUNCH();
}

template <typename T>
void layernorm_backward(T* dinp, float* dweight, float* dbias, const T* dout, const T* inp, const float* weight,
                        const float* mean, const float* rstd, int64_t rows, int cols, cudaStream_t stream) {
  if (rows == 0) return;
  input_backward_kernel<T><<<grid_for_rows(rows), kThreads, 0, stream>>>(dinp, dout, inp, weight, mean, rstd,
                                                                          rows, cols);
  CUDA_CHECK_LAUNCH();
  const dim3 block(32, kRowLanes);
  const dim3 grid((cols + 31) / 32, unsigned(std::clamp<int64_t>(rows / 64, 1, 1024)));
  // Stream-ordered scratch for the slices' partial sums (no host wait; allowed under graph capture).
  float* partials = nullptr;
  CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&partials), size_t(grid.y) * 2 * cols * sizeof(float), stream));
  param_backward_kernel<T><<<grid, block, 0, stream>>>(partials, dout, inp, mean, rstd, rows, cols);
  CUDA_CHECK_LAUNCH();
  sum_partials_kernel<<<grid_for(cols), kThreads, 0, stream>>>(dweight, dbias, partials, int(grid.y), cols);
  CUDA_CHECK_LAUNCH();
  CUDA_CHECK(cudaFreeAsync(partials, stream));
}

#define FINEMOE_LAYERNORM(T)                                                                              \
  template void layernorm_forward<T>(T*, float*, float*, const T*, const float*, const float*, int64_t, int, \
                                     float, cudaStream_t);                                                \
  template void layernorm_backward<T>(T*, float*, float*, const T*, const T*, const float*, const float*,    \
                                      const float*, int64_t, int, cudaStream_t);
FINEMOE_LAYERNORM(float)
FINEMOE_LAYERNORM(__nv_bfloat16)
#undef FINEMOE_LAYERNORM

}  // namespace finemoe::cuda
