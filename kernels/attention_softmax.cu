#include "kernels/attention_softmax.h"
#include "kernels/cuda_check.h"
#include "kernels/device_util.cuh"

namespace finemoe::cuda {
namespace {
using namespace detail;

// One warp per row of a score matrix.
__global__ void forward_kernel(float* att, int64_t rows, int context) {
  const int lane = threadIdx.x % 32;
  for (int64_t r = warp_id(); r < rows; r += warp_count()) {
    const int t = int(r % context);
    float* row = att + r * context;
    float mx = -INFINITY;
    for (int j = lane; j <= t; j += 32) mx = fmaxf(mx, row[j]);
    mx = warp_max(mx);
    float sum = 0;
    for (int j = lane; j <= t; j += 32) sum += expf(row[j] - mx);
    const float inv = 1.0f / warp_sum(sum);
    for (int j = lane; j < context; j += 32) row[j] = j <= t ? expf(row[j] - mx) * inv : 0.0f;
  }
}

__global__ void backward_kernel(float* datt, const float* att, int64_t rows, int context) {
  const int lane = threadIdx.x % 32;
  for (int64_t r = warp_id(); r < rows; r += warp_count()) {
    const int t = int(r % context);
    const float* p = att + r * context;
    float* g = datt + r * context;
    float dot = 0;
    for (int j = lane; j <= t; j += 32) dot += p[j] * g[j];
    dot = warp_sum(dot);
    for (int j = lane; j < context; j += 32) g[j] = j <= t ? p[j] * (g[j] - dot) : 0.0f;
  }
}
}  // namespace

void causal_softmax_forward(float* att, int64_t items, int context, cudaStream_t stream) {
  const int64_t rows = items * context;
  if (rows == 0) return;
  forward_kernel<<<grid_for_rows(rows), kThreads, 0, stream>>>(att, rows, context);
  CUDA_CHECK_LAUNCH();
}

void causal_softmax_backward(float* datt, const float* att, int64_t items, int context, cudaStream_t stream) {
  const int64_t rows = items * context;
  if (rows == 0) return;
  backward_kernel<<<grid_for_rows(rows), kThreads, 0, stream>>>(datt, att, rows, context);
  CUDA_CHECK_LAUNCH();
}

}  // namespace finemoe::cuda
