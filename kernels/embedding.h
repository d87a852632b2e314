#pragma once
// Token + position embedding on the device; reference: backend/cpu/embedding.h. fp32.
#include <cuda_runtime_api.h>

#include <cstdint>

namespace finemoe::cuda {

// out[s, p, :] = wte[tokens[s, p], :] + wpe[p, :].
void embedding_forward(float* out, const int32_t* tokens, const float* wte, const float* wpe, int n_seq,
                       int context, int d, cudaStream_t stream = 0);

// Accumulates (+=) dout into dwte and dwpe, both in a fixed order (the same result on every run):
// dwpe over the sequences in order, dwte's rows of one token id in row order (kernels/sorted_scatter.h).
void embedding_backward(float* dwte, float* dwpe, const float* dout, const int32_t* tokens, int n_seq,
                        int context, int d, cudaStream_t stream = 0);

}  // namespace finemoe::cuda
