#pragma once
// LayerNorm over the last dimension on the device; reference: backend/cpu/layernorm.h.
// Activations (inp, out, dout, dinp) are float or bf16; weight, bias, their gradients and the row
// statistics stay fp32, and all math is fp32. With T = float the arguments are the CPU's.
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace finemoe::cuda {

template <typename T>
void layernorm_forward(T* out, float* mean, float* rstd, const T* inp, const float* weight, const float* bias,
                       int64_t rows, int cols, float eps, cudaStream_t stream = 0);

// Accumulates (+=) into dinp, dweight and dbias; the last two summed over row slices in a fixed
// order (no atomics: the same result on every run).
template <typename T>
void layernorm_backward(T* dinp, float* dweight, float* dbias, const T* dout, const T* inp, const float* weight,
                        const float* mean, const float* rstd, int64_t rows, int cols, cudaStream_t stream = 0);

}  // namespace finemoe::cuda
