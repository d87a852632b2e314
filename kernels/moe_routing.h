#pragma once
// MoE routing over a layer's whole routing buffer on the device, fp32 (the router stays fp32 in
// bf16 runs). Each function mirrors its CPU reference in src/backend/cpu/routing.h with the same
// arguments plus a stream: decisions (which copies, in which order) are exactly the reference's
// on the same probabilities, ties included; floating-point sums may differ in their last bits.
// Nothing here waits for the device or reads device memory on the host.
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "backend/cpu/routing.h"

namespace finemoe::cuda {

// Device scratch that route_tokens needs for shape s: about slots * n_experts * 4 bytes (plus
// routing-buffer rows * 8 for token choice). Any alignment; no initial contents; free for reuse once
// the call's work on its stream is done.
size_t route_tokens_workspace_bytes(const cpu::RoutingShape& s);

// cpu::route_tokens: selection per (group, position), the counts per expert, their offsets and a
// stable counting sort into send order, all on the device (5 launches; token choice 6). All pointers
// are device memory: copy_row, copy_expert and copy_gate hold s.max_copies() entries (the first
// sum(per_expert) are written), per_expert n_experts, requested (or null) slots * n_experts.
// local_probs may point into group_probs (this rank's rows of it).
void route_tokens(const float* group_probs, const float* local_probs, const cpu::RoutingShape& s,
                  int32_t* copy_row, int32_t* copy_expert, float* copy_gate, int64_t* per_expert,
                  int32_t* requested, void* workspace, size_t workspace_bytes, cudaStream_t stream);

// cpu::balance_loss (loss_sum: one device double, accumulated into).
void balance_loss(const float* group_probs, const int32_t* requested, const cpu::RoutingShape& s, double coef,
                  int local_tokens_per_slot, float* grad, double* loss_sum, cudaStream_t stream);

// cpu::router_z_loss (loss_sum: one device double, accumulated into).
void router_z_loss(const float* logits, const float* probs, int64_t rows, int n_experts, double scale,
                   float* dlogits, double* loss_sum, cudaStream_t stream);

// cpu::routing_backward.
void routing_backward(const float* dgate, const int32_t* copy_row, const int32_t* copy_expert, int64_t copies,
                      const float* balance_grad, const cpu::RoutingShape& s, float* dprobs, cudaStream_t stream);

// cpu::softmax_backward_accumulate.
void softmax_backward_accumulate(const float* probs, const float* dprobs, float* dlogits, int64_t rows, int n,
                                 cudaStream_t stream);

}  // namespace finemoe::cuda
