#pragma once
// Token + position embedding on the device; reference: backend/cpu/embedding.h. fp32.
#include <cuda_runtime_api.h>

#include <cstdint>

namespace finemoe::cuda {

// out[s, p, :] = wte[tokens[s, p], :] + wpe[p, :].
void embedding_forward(float* out, const int32_t* tokens, const float* wte, const float* wpe, int n_seq,
                       int context, int d, cudaStream_t stream = 0);

// Accumulates (+=) dout into dwte and dwpe. dwpe is summed in a fixed order; dwte rows shared by
// several tokens are summed with atomics (order, hence rounding, may vary between runs).
void embedding_backward(float* dwte, float* dwpe, const float* dout, const int32_t* tokens, int n_seq,
                        int context, int d, cudaStream_t stream = 0);

}  // namespace finemoe::cuda
