#pragma once
// CUBLAS_CHECK for every cuBLAS call: a failure names the call, the file and the line.
#include <cublas_v2.h>

namespace finemoe::cuda {
[[noreturn]] void cublas_fail(cublasStatus_t status, const char* call, const char* file, int line);
}  // namespace finemoe::cuda

#define CUBLAS_CHECK(call)                                                                     \
  do {                                                                                         \
    const cublasStatus_t finemoe_cublas_rc_ = (call);                                          \
    if (finemoe_cublas_rc_ != CUBLAS_STATUS_SUCCESS)                                           \
      ::finemoe::cuda::cublas_fail(finemoe_cublas_rc_, #call, __FILE__, __LINE__);             \
  } while (0)
