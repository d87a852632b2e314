#pragma once
// Optimizer kernels on the device; reference: backend/cpu/adamw.h. fp32 master weights and state.
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

#include "backend/cpu/adamw.h"

namespace finemoe::cuda {

// AdamW as cpu::adamw_update: decay, then the Adam update; the step's constants are formed on the
// host exactly as the CPU does.
void adamw_update(float* param, const float* grad, float* m, float* v, int64_t n, const cpu::AdamWStep& s,
                  cudaStream_t stream = 0);

// The same update with the step's constants formed on the device, so that a captured step reads
// them from fixed device memory: adamw_prepare (one thread) turns inputs [lr, t] and the gradient
// norm's two sums of squares [replicated, expert] into the constants of both decay settings
// (constants[0]: weight_decay, constants[1]: none), with the clipping scale
// clip / sqrt(sum) when that is < 1 (clip > 0); adamw_update_prepared applies constants[decay ? 0 : 1].
// Same formulas as adamw_update (double, then float).
struct AdamWConstants {
  float b1, b2, decay, step, inv_sqrt_bc2, eps, scale;
};
void adamw_prepare(const double* inputs, const double* squares, double beta1, double beta2, double eps,
                   double weight_decay, double clip, AdamWConstants* constants, cudaStream_t stream = 0);
void adamw_update_prepared(float* param, const float* grad, float* m, float* v, int64_t n,
                           const AdamWConstants* constants, bool decay, cudaStream_t stream = 0);

// Sum of squares accumulated in double, written to *result (device memory) so that the gradient norm
// can be all-reduced without a host round trip. partials: device scratch of kSumOfSquaresPartials
// doubles. Deterministic: fixed partition and summation order.
constexpr int kSumOfSquaresPartials = 256;
template <typename T>
void sum_of_squares(const T* x, int64_t n, double* result, double* partials, cudaStream_t stream = 0);

}  // namespace finemoe::cuda
