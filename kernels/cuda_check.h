#pragma once
// CUDA_CHECK for every CUDA runtime call: a failure names the call, the file and the line.
// CUDA_CHECK_LAUNCH after each kernel launch (launch errors are only visible through
// cudaGetLastError).
#include <cuda_runtime_api.h>

namespace finemoe::cuda {
[[noreturn]] void cuda_fail(cudaError_t code, const char* call, const char* file, int line);
}  // namespace finemoe::cuda

#define CUDA_CHECK(call)                                                                       \
  do {                                                                                         \
    const cudaError_t finemoe_cuda_rc_ = (call);                                               \
    if (finemoe_cuda_rc_ != cudaSuccess)                                                       \
      ::finemoe::cuda::cuda_fail(finemoe_cuda_rc_, #call, __FILE__, __LINE__);                 \
  } while (0)

#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())
