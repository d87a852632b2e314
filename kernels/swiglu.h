#pragma once
// The gated SwiGLU activation on the device; reference: backend/cpu/swiglu.h (same arguments, plus
// the stream). Storage float or bf16, math in fp32.
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace finemoe::cuda {

// inp [rows, 2 hidden] = [gate | up] per row; out [rows, hidden] = silu(gate) * up.
template <typename T>
void swiglu_forward(T* out, const T* inp, int64_t rows, int hidden, cudaStream_t stream = 0);

// dinp [rows, 2 hidden] (overwritten) from inp and dout [rows, hidden].
template <typename T>
void swiglu_backward(T* dinp, const T* inp, const T* dout, int64_t rows, int hidden, cudaStream_t stream = 0);

}  // namespace finemoe::cuda
