#pragma once
// The causal softmax of attention, on the score matrices [items, context, context] produced by
// strided-batched GEMMs (src/backend/cuda/attention.h). fp32 (attention softmax stays fp32 in bf16
// runs). Reference: the softmax steps inside cpu::attention_forward / attention_backward.
#include <cuda_runtime_api.h>

#include <cstdint>

namespace finemoe::cuda {

// In place: row t of each item becomes softmax(att[t, 0..t]) with zeros above the diagonal.
void causal_softmax_forward(float* att, int64_t items, int context, cudaStream_t stream = 0);

// In place: datt holds dP on entry; on exit dS = P (dP - sum_j P dP) on and below the diagonal,
// zero above it.
void causal_softmax_backward(float* datt, const float* att, int64_t items, int context, cudaStream_t stream = 0);

}  // namespace finemoe::cuda
