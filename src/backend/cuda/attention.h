#pragma once
// Causal multi-head self-attention on the device with the arguments of cpu::attention_forward /
// attention_backward (src/backend/cpu/attention.h), fp32: per head, strided-batched GEMMs over the
// sequences, and the causal softmax kernels (kernels/attention_softmax.h) over all score matrices.
// Runs on the handle's stream. allow_tf32 switches the products to TF32 tensor cores.
#include <cublas_v2.h>

namespace finemoe::cuda {

void attention_forward(cublasHandle_t handle, float* out, float* att, const float* qkv, int n_seq, int context,
                       int n_heads, int d, bool allow_tf32 = false);

void attention_backward(cublasHandle_t handle, float* dqkv, float* datt, const float* dout, const float* qkv,
                        const float* att, int n_seq, int context, int n_heads, int d, bool allow_tf32 = false);

}  // namespace finemoe::cuda
