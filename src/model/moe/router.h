#pragma once
// The router of an MoE layer: logits = x W_r, probabilities = softmax over experts per token,
// computed in the run's precision T (fp64 in an fp64 run). The z-loss (ST-MoE) is in routing_ops.h.
#include <cstdint>

#include "backend/ops.h"

namespace finemoe::moe {

// x [rows, d_model], w [d_model, n_experts] -> logits, probs [rows, n_experts].
template <typename T>
void router_forward(const T* x, ops::Operand<T> w, int64_t rows, int d_model, int n_experts, T* logits, T* probs);

// Softmax backward then the two products of the logit GEMM. On entry dlogits holds gradients
// that act on the logits directly (the z-loss term); on exit it holds the full logit gradient.
// dprobs: gradient with respect to the probabilities. dx and dw are ACCUMULATED into.
template <typename T>
void router_backward(const T* x, ops::Operand<T> w, const T* probs, const T* dprobs, T* dlogits, int64_t rows,
                     int d_model, int n_experts, T* dx, T* dw);

}  // namespace finemoe::moe
