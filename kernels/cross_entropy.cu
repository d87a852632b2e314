#include "kernels/cross_entropy.h"
#include "kernels/cuda_check.h"
#include "kernels/device_util.cuh"

namespace finemoe::cuda {
namespace {
using namespace detail;

// Reduction over the block (kThreads threads); every thread gets the result.
template <bool Max>
__device__ float block_reduce(float v, float* shared) {
  v = Max ? warp_max(v) : warp_sum(v);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();  // shared may still be read from a previous reduction
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  v = lane < kWarpsPerBlock ? shared[lane] : (Max ? -INFINITY : 0.0f);
  return Max ? warp_max(v) : warp_sum(v);
}

// One block per row: max, sum of exponentials, then the gradient (each element is read before the
// same thread writes it, so dlogits may alias logits).
template <typename T>
__global__ void kernel(T* dlogits, const T* logits, const int32_t* targets, int64_t rows, int vocab,
                       float dscale, float* losses) {
  __shared__ float shared[kWarpsPerBlock];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* z = logits + r * vocab;
    float mx = -INFINITY;
    for (int i = threadIdx.x; i < vocab; i += kThreads) mx = fmaxf(mx, to_float(z[i]));
    mx = block_reduce<true>(mx, shared);
    float sum = 0;
    for (int i = threadIdx.x; i < vocab; i += kThreads) sum += expf(to_float(z[i]) - mx);
    sum = block_reduce<false>(sum, shared);
    const int target = targets[r];
    if (threadIdx.x == 0) losses[r] = logf(sum) - (to_float(z[target]) - mx);
    __syncthreads();  // z[target] is read before any element is overwritten
    if (dlogits) {
      T* g = dlogits + r * vocab;
      const float inv = 1.0f / sum;
      for (int i = threadIdx.x; i < vocab; i += kThreads) {
        const float p = dscale * expf(to_float(z[i]) - mx) * inv;
        g[i] = from_float<T>(i == target ? p - dscale : p);
      }
    }
  }
}
}  // namespace

template <typename T>
void softmax_cross_entropy(T* dlogits, const T* logits, const int32_t* targets, int64_t rows, int vocab,
                           float dscale, float* losses, cudaStream_t stream) {
  if (rows == 0) return;
  const unsigned blocks = unsigned(std::min<int64_t>(rows, int64_t(1) << 16));
  kernel<T><<<blocks, kThreads, 0, stream>>>(dlogits, logits, targets, rows, vocab, dscale, losses);
  CUDA_CHECK_LAUNCH();
}

template void softmax_cross_entropy<float>(float*, const float*, const int32_t*, int64_t, int, float, float*,
                                           cudaStream_t);
template void softmax_cross_entropy<__nv_bfloat16>(__nv_bfloat16*, const __nv_bfloat16*, const int32_t*,
                                                   int64_t, int, float, float*, cudaStream_t);

}  // namespace finemoe::cuda
