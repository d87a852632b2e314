#include "kernels/cuda_check.h"
#include "kernels/device_util.cuh"
#include "kernels/routing.h"

namespace finemoe::cuda {
namespace {
using namespace detail;

__global__ void softmax_kernel(const float* logits, float* probs, int64_t rows, int n) {
  const int lane = threadIdx.x % 32;
  for (int64_t r = warp_id(); r < rows; r += warp_count()) {
    const float* l = logits + r * n;
    float* p = probs + r * n;
    float mx = -INFINITY;
    for (int e = lane; e < n; e += 32) mx = fmaxf(mx, l[e]);
    mx = warp_max(mx);
    float sum = 0;
    for (int e = lane; e < n; e += 32) sum += expf(l[e] - mx);
    const float inv = 1.0f / warp_sum(sum);
    for (int e = lane; e < n; e += 32) p[e] = expf(l[e] - mx) * inv;
  }
}

}  // namespace

void router_softmax(const float* logits, float* probs, int64_t rows, int n_experts, cudaStream_t stream) {
  if (rows == 0) return;
  softmax_kernel<<<grid_for_rows(rows), kThreads, 0, stream>>>(logits, probs, rows, n_experts);
  CUDA_CHECK_LAUNCH();
}

}  // namespace finemoe::cuda
