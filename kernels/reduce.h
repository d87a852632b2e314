#pragma once
// Sums into device doubles without a host synchronisation (the step's loss sums stay on the device
// until the step reads them once).
#include <cuda_runtime_api.h>

#include <cstdint>

namespace finemoe::cuda {

// *sum += the sum of x[0..n) in double, in a fixed order (the same result on every run); one launch.
void accumulate_sum(const float* x, int64_t n, double* sum, cudaStream_t stream = 0);

// dst[i] += src[i] for i < n.
void add_doubles(double* dst, const double* src, int n, cudaStream_t stream = 0);

}  // namespace finemoe::cuda
