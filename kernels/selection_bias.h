#pragma once
// Loss-free balancing's selection scores on the device; reference: backend/cpu/selection_bias.h
// (same arguments, plus the stream).
#include <cuda_runtime_api.h>

#include <cstdint>

namespace finemoe::cuda {

// scores[r][e] = probs[r][e] + bias[e] for rows x n_experts (float).
void add_selection_bias(float* scores, const float* probs, const float* bias, int64_t rows, int n_experts,
                        cudaStream_t stream = 0);

}  // namespace finemoe::cuda
