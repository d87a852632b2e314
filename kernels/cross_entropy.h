#pragma once
// Softmax + cross-entropy over the vocabulary fused with its gradient, on the device; reference:
// backend/cpu/cross_entropy.h. Logits float or bf16, math fp32.
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace finemoe::cuda {

// losses[r] = -log softmax(logits[r])[targets[r]] (device, fp32; the CPU returns their sum). If
// dlogits is not null it receives dscale * (softmax(logits[r]) - onehot(targets[r])); dlogits may
// alias logits.
template <typename T>
void softmax_cross_entropy(T* dlogits, const T* logits, const int32_t* targets, int64_t rows, int vocab,
                           float dscale, float* losses, cudaStream_t stream = 0);

}  // namespace finemoe::cuda
