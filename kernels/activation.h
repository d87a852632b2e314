#pragma once
// Elementwise FFN activations on the device; reference: backend/cpu/activation.h (same arguments,
// plus the stream). Storage float or bf16, math in fp32.
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

#include "backend/cpu/activation.h"

namespace finemoe::cuda {

template <typename T>
void activation_forward(T* out, const T* inp, int64_t n, cpu::Activation a, cudaStream_t stream = 0);

// dinp = act'(inp) * dout (overwritten). relu'(0) = 0.
template <typename T>
void activation_backward(T* dinp, const T* inp, const T* dout, int64_t n, cpu::Activation a,
                         cudaStream_t stream = 0);

// The same with the input stored in another type than the output (or the gradients): the separate
// pass of the fused GEMM epilogues (backend/cuda/gemm_epilogue.h), whose pre-activation may be kept
// in fp32 beside a bf16 output or the other way round. TOut, TIn: float or __nv_bfloat16.
template <typename TOut, typename TIn>
void activation_forward_mixed(TOut* out, const TIn* inp, int64_t n, cpu::Activation a, cudaStream_t stream = 0);
template <typename TGrad, typename TIn>
void activation_backward_mixed(TGrad* dinp, const TIn* inp, const TGrad* dout, int64_t n, cpu::Activation a,
                               cudaStream_t stream = 0);

}  // namespace finemoe::cuda
