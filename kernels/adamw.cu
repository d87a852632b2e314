#include <cmath>

#include "kernels/adamw.h"
#include "kernels/cuda_check.h"
#include "kernels/device_util.cuh"

namespace finemoe::cuda {
namespace {
using namespace detail;

__device__ __forceinline__ void adamw_element(float* param, const float* grad, float* m, float* v, int64_t i,
                                              const AdamWConstants& c) {
  const float g = grad[i] * c.scale;
  const float mi = c.b1 * m[i] + (1.0f - c.b1) * g;
  const float vi = c.b2 * v[i] + (1.0f - c.b2) * g * g;
  m[i] = mi;
  v[i] = vi;
  param[i] = param[i] * c.decay - c.step * mi / (sqrtf(vi) * c.inv_sqrt_bc2 + c.eps);
}

__global__ void adamw_kernel(float* param, const float* grad, float* m, float* v, int64_t n, AdamWConstants c) {
  for (int64_t i = thread_id(); i < n; i += thread_count()) adamw_element(param, grad, m, v, i, c);
}

__global__ void adamw_prepared_kernel(float* param, const float* grad, float* m, float* v, int64_t n,
                                      const AdamWConstants* constants) {
  const AdamWConstants c = *constants;
  for (int64_t i = thread_id(); i < n; i += thread_count()) adamw_element(param, grad, m, v, i, c);
}

__global__ void adamw_prepare_kernel(const double* inputs, const double* squares, double beta1, double beta2,
                                     double eps, double weight_decay, double clip, AdamWConstants* out) {
  const double lr = inputs[0], t = inputs[1];
  const double norm = sqrt(squares[0] + squares[1]);
  const double scale = clip > 0 && norm > clip ? clip / norm : 1.0;
  const double bc1 = 1.0 - pow(beta1, t), bc2 = 1.0 - pow(beta2, t);
  for (int k = 0; k < 2; ++k)
    out[k] = AdamWConstants{float(beta1),      float(beta2),               float(1.0 - lr * (k == 0 ? weight_decay : 0.0)),
                            float(lr / bc1),   float(1.0 / sqrt(bc2)),     float(eps),
                            float(scale)};
}

// Block sum of one double per thread (blockDim.x == kThreads).
__device__ double block_sum(double v) {
  __shared__ double shared[kThreads];
  shared[threadIdx.x] = v;
  __syncthreads();
  for (int stride = kThreads / 2; stride > 0; stride >>= 1) {
    if (int(threadIdx.x) < stride) shared[threadIdx.x] += shared[threadIdx.x + stride];
    __syncthreads();
  }
  return shared[0];
}

template <typename T>
__global__ void squares_partial_kernel(const T* x, int64_t n, double* partials) {
  double acc = 0;
  for (int64_t i = thread_id(); i < n; i += thread_count()) {
    const double xi = to_float(x[i]);
    acc += xi * xi;
  }
  const double total = block_sum(acc);
  if (threadIdx.x == 0) partials[blockIdx.x] = total;
}

__global__ void squares_final_kernel(const double* partials, double* result) {
  double acc = 0;
  for (int i = threadIdx.x; i < kSumOfSquaresPartials; i += kThreads) acc += partials[i];
  const double total = block_sum(acc);
  if (threadIdx.x == 0) *result = total;
}
}  // namespace

void adamw_update(float* param, const float* grad, float* m, float* v, int64_t n, const cpu::AdamWStep& s,
                  cudaStream_t stream) {
  if (n == 0) return;
  const double bc1 = 1.0 - std::pow(s.beta1, double(s.t));
  const double bc2 = 1.0 - std::pow(s.beta2, double(s.t));
  const AdamWConstants c{float(s.beta1),      float(s.beta2),   float(1.0 - s.lr * s.weight_decay),
                         float(s.lr / bc1),   float(1.0 / std::sqrt(bc2)), float(s.eps),
                         float(s.grad_scale)};
  adamw_kernel<<<grid_for(n), kThreads, 0, stream>>>(param, grad, m, v, n, c);
  CUDA_CHECK_LAUNCH();
}

void adamw_prepare(const double* inputs, const double* squares, double beta1, double beta2, double eps,
                   double weight_decay, double clip, AdamWConstants* constants, cudaStream_t stream) {
  adamw_prepare_kernel<<<1, 1, 0, stream>>>(inputs, squares, beta1, beta2, eps, weight_decay, clip, constants);
  CUDA_CHECK_LAUNCH();
}

void adamw_update_prepared(float* param, const float* grad, float* m, float* v, int64_t n,
                           const AdamWConstants* constants, bool decay, cudaStream_t stream) {
  if (n == 0) return;
  adamw_prepared_kernel<<<grid_for(n), kThreads, 0, stream>>>(param, grad, m, v, n, constants + (decay ? 0 : 1));
  CUDA_CHECK_LAUNCH();
}

template <typename T>
void sum_of_squares(const T* x, int64_t n, double* result, double* partials, cudaStream_t stream) {
  squares_partial_kernel<T><<<kSumOfSquaresPartials, kThreads, 0, stream>>>(x, n, partials);
  CUDA_CHECK_LAUNCH();
  squares_final_kernel<<<1, kThreads, 0, stream>>>(partials, result);
  CUDA_CHECK_LAUNCH();
}

template void sum_of_squares<float>(const float*, int64_t, double*, double*, cudaStream_t);
template void sum_of_squares<__nv_bfloat16>(const __nv_bfloat16*, int64_t, double*, double*, cudaStream_t);

}  // namespace finemoe::cuda
