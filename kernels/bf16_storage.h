#pragma once
// bfloat16 storage of kept activations (backend/kept_activation.h): fp32 -> bf16 (round to nearest,
// ties to even) and back. References: finemoe::to_bf16 / to_float (backend/bf16.h), bit for bit.
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace finemoe::cuda {

void pack_bf16(__nv_bfloat16* dst, const float* src, int64_t n, cudaStream_t stream = 0);
void unpack_bf16(float* dst, const __nv_bfloat16* src, int64_t n, cudaStream_t stream = 0);

}  // namespace finemoe::cuda
