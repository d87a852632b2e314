#pragma once
// The router's softmax on the device, fp32 (the router stays fp32 in bf16 runs); reference: the
// softmax of moe::router_forward (src/model/moe/router.h). Selection: kernels/moe_routing.h.
#include <cuda_runtime_api.h>

#include <cstdint>

namespace finemoe::cuda {

// probs[r] = softmax(logits[r]) over n_experts, per row.
void router_softmax(const float* logits, float* probs, int64_t rows, int n_experts, cudaStream_t stream = 0);

}  // namespace finemoe::cuda
