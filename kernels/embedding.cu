#include "kernels/cuda_check.h"
#include "kernels/device_util.cuh"
#include "kernels/embedding.h"
#include "kernels/sorted_scatter.h"

namespace finemoe::cuda {
namespace {
using namespace detail;

__global__ void forward_kernel(float* out, const int32_t* tokens, const float* wte, const float* wpe,
                               int64_t rows, int context, int d) {
  const int64_t n = rows * d;
  for (int64_t idx = thread_id(); idx < n; idx += thread_count()) {
    const int64_t r = idx / d;
    const int i = int(idx % d);
    out[idx] = wte[int64_t(tokens[r]) * d + i] + wpe[(r % context) * d + i];
  }
}

// One thread per (position, column): sums over the sequences in order.
__global__ void position_backward_kernel(float* dwpe, const float* dout, int n_seq, int context, int d) {
  const int64_t n = int64_t(context) * d;
  for (int64_t idx = thread_id(); idx < n; idx += thread_count()) {
    float acc = 0;
    for (int s = 0; s < n_seq; ++s) acc += dout[int64_t(s) * n + idx];
    dwpe[idx] += acc;
  }
}
}  // namespace

void embedding_forward(float* out, const int32_t* tokens, const float* wte, const float* wpe, int n_seq,
                       int context, int d, cudaStream_t stream) {
  const int64_t rows = int64_t(n_seq) * context;
  if (rows == 0 || d == 0) return;
  forward_kernel<<<grid_for(rows * d), kThreads, 0, stream>>>(out, tokens, wte, wpe, rows, context, d);
  CUDA_CHECK_LAUNCH();
}

void embedding_backward(float* dwte, float* dwpe, const float* dout, const int32_t* tokens, int n_seq,
                        int context, int d, cudaStream_t stream) {
  const int64_t rows = int64_t(n_seq) * context;
  if (rows == 0 || d == 0) return;
  // The rows of one token id summed in row order (deterministic; cpu::embedding_backward's order).
  sorted_scatter_add<float>(dout, tokens, nullptr, rows, d, dwte, stream);
  position_backward_kernel<<<grid_for(int64_t(context) * d), kThreads, 0, stream>>>(dwpe, dout, n_seq, context, d);
  CUDA_CHECK_LAUNCH();
}

}  // namespace finemoe::cuda
