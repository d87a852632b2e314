#pragma once
// NCCL_CHECK for every NCCL call: a failure names the call, the file and the line.
#include <nccl.h>

namespace finemoe {
[[noreturn]] void nccl_fail(ncclResult_t result, const char* call, const char* file, int line);
}  // namespace finemoe

#define NCCL_CHECK(call)                                                                       \
  do {                                                                                         \
    const ncclResult_t finemoe_nccl_rc_ = (call);                                              \
    if (finemoe_nccl_rc_ != ncclSuccess) ::finemoe::nccl_fail(finemoe_nccl_rc_, #call, __FILE__, __LINE__); \
  } while (0)
