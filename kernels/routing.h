#pragma once
// MoE routing on the device, fp32 (the router stays fp32 in bf16 runs).
// References: the softmax of moe::router_forward, the top-k of moe::TokenChoiceSelector and
// moe::ExpertChoiceSelector (src/model/moe/router.h, token_selection.h).
#include <cuda_runtime_api.h>

#include <cstdint>

namespace finemoe::cuda {

// probs[r] = softmax(logits[r]) over n_experts, per row.
void router_softmax(const float* logits, float* probs, int64_t rows, int n_experts, cudaStream_t stream = 0);

// Per row, the k experts of highest probability in decreasing order (ties: lowest expert index):
// experts[r * k + j] and weights[r * k + j] = probs[r, experts[r * k + j]].
void router_top_k(const float* probs, int64_t rows, int n_experts, int k, int32_t* experts, float* weights,
                  cudaStream_t stream = 0);

// Expert choice per routing group, with the MoE layer's layout: probs [n_groups * group_size * context,
// n_experts], rows seq * context + pos; group g at position p holds the group_size tokens
// i = 0..group_size-1 of rows (g * group_size + i) * context + p. For each (g, p, e) the `capacity`
// tokens with the highest probs[., e] in decreasing order (ties: lowest i), as
// ExpertChoiceSelector::select keeps them: tokens[((g * context + p) * n_experts + e) * capacity + j]
// is the token's index i in its group, gates[...] its probability.
void expert_choice_select(const float* probs, int n_groups, int group_size, int context, int n_experts,
                          int capacity, int32_t* tokens, float* gates, cudaStream_t stream = 0);

}  // namespace finemoe::cuda
