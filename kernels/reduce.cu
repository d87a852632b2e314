#include "kernels/cuda_check.h"
#include "kernels/device_util.cuh"
#include "kernels/reduce.h"

namespace finemoe::cuda {
namespace {
using namespace detail;

// One block, so that the order of the additions is fixed: thread t sums x[t], x[t + 1024], ... in
// order, then the block's tree. (A loss vector is at most a few million floats.)
constexpr int kSumThreads = 1024;

__global__ void accumulate_sum_kernel(const float* x, int64_t n, double* sum) {
  __shared__ double shared[32];
  double acc = 0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) acc += x[i];
  acc = block_sum(acc, shared);
  if (threadIdx.x == 0) *sum += acc;
}

__global__ void add_doubles_kernel(double* dst, const double* src, int n) {
  for (int64_t i = thread_id(); i < n; i += thread_count()) dst[i] += src[i];
}
}  // namespace

void accumulate_sum(const float* x, int64_t n, double* sum, cudaStream_t stream) {
  if (n == 0) return;
  accumulate_sum_kernel<<<1, kSumThreads, 0, stream>>>(x, n, sum);
  CUDA_CHECK_LAUNCH();
}

void add_doubles(double* dst, const double* src, int n, cudaStream_t stream) {
  if (n == 0) return;
  add_doubles_kernel<<<grid_for(n), kThreads, 0, stream>>>(dst, src, n);
  CUDA_CHECK_LAUNCH();
}

}  // namespace finemoe::cuda
