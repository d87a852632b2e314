#include "kernels/cuda_check.h"
#include "kernels/device_util.cuh"
#include "kernels/selection_bias.h"

namespace finemoe::cuda {
namespace {
using namespace detail;

__global__ void add_selection_bias_kernel(float* scores, const float* probs, const float* bias, int64_t n,
                                          int n_experts) {
  for (int64_t i = thread_id(); i < n; i += thread_count()) scores[i] = probs[i] + bias[i % n_experts];
}
}  // namespace

void add_selection_bias(float* scores, const float* probs, const float* bias, int64_t rows, int n_experts,
                        cudaStream_t stream) {
  const int64_t n = rows * n_experts;
  if (n == 0) return;
  add_selection_bias_kernel<<<grid_for(n), kThreads, 0, stream>>>(scores, probs, bias, n, n_experts);
  CUDA_CHECK_LAUNCH();
}

}  // namespace finemoe::cuda
