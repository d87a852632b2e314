#include "kernels/bf16_storage.h"
#include "kernels/cuda_check.h"
#include "kernels/device_util.cuh"

namespace finemoe::cuda {
namespace {
using namespace detail;

__global__ void pack_bf16_kernel(__nv_bfloat16* dst, const float* src, int64_t n) {
  for (int64_t i = thread_id(); i < n; i += thread_count()) dst[i] = __float2bfloat16_rn(src[i]);
}

__global__ void unpack_bf16_kernel(float* dst, const __nv_bfloat16* src, int64_t n) {
  for (int64_t i = thread_id(); i < n; i += thread_count()) dst[i] = __bfloat162float(src[i]);
}
}  // namespace

void pack_bf16(__nv_bfloat16* dst, const float* src, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  pack_bf16_kernel<<<grid_for(n), kThreads, 0, stream>>>(dst, src, n);
  CUDA_CHECK_LAUNCH();
}

void unpack_bf16(float* dst, const __nv_bfloat16* src, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  unpack_bf16_kernel<<<grid_for(n), kThreads, 0, stream>>>(dst, src, n);
  CUDA_CHECK_LAUNCH();
}

}  // namespace finemoe::cuda
