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

// Sum of squares accumulated in double, written to *result (device memory) so that the gradient norm
// can be all-reduced without a host round trip. partials: device scratch of kSumOfSquaresPartials
// doubles. Deterministic: fixed partition and summation order.
constexpr int kSumOfSquaresPartials = 256;
template <typename T>
void sum_of_squares(const T* x, int64_t n, double* result, double* partials, cudaStream_t stream = 0);

}  // namespace finemoe::cuda
