#pragma once
// Loss-free load balancing (moe.balance = bias): the selection scores of token choice are the
// router probabilities plus a per-expert bias; the gates stay the probabilities. The reference of
// kernels/selection_bias.cu.
#include <cstdint>

namespace finemoe::cpu {

// scores[r][e] = probs[r][e] + bias[e] for rows x n_experts.
template <typename T>
void add_selection_bias(T* scores, const T* probs, const T* bias, int64_t rows, int n_experts);

// The bias step after an optimizer step: delta[e] = rate * sign(mean load - load[e]) (0 at the
// mean), loads summed over the world and the step's micro-batches.
template <typename T>
void selection_bias_step(T* delta, const int64_t* load, int n_experts, double rate);

}  // namespace finemoe::cpu
