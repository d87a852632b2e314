#pragma once
// The MoE layer's routing on the compute backend (backend/compute.h): the CPU references of
// backend/cpu/routing.h, or their kernels (kernels/moe_routing.h) on the compute stream. Every
// pointer is compute-backend memory (DeviceBuffer data); nothing here waits for the device.
#include <cstddef>
#include <cstdint>

#include "backend/cpu/routing.h"

namespace finemoe::moe::routing {

using cpu::RoutingShape;

// Device scratch route_tokens needs (0 on the CPU).
size_t workspace_bytes(const RoutingShape& s);

template <typename T>
void route_tokens(const T* group_probs, const T* local_probs, const RoutingShape& s, int32_t* copy_row,
                  int32_t* copy_expert, T* copy_gate, int64_t* per_expert, int32_t* requested, void* workspace,
                  size_t workspace_bytes);
template <typename T>
void balance_loss(const T* group_probs, const int32_t* requested, const RoutingShape& s, double coef,
                  int local_tokens_per_slot, T* grad, double* loss_sum);
template <typename T>
void router_z_loss(const T* logits, const T* probs, int64_t rows, int n_experts, double scale, T* dlogits,
                   double* loss_sum);
template <typename T>
void routing_backward(const T* dgate, const int32_t* copy_row, const int32_t* copy_expert, int64_t copies,
                      const T* balance_grad, const RoutingShape& s, T* dprobs);
template <typename T>
void softmax_backward_accumulate(const T* probs, const T* dprobs, T* dlogits, int64_t rows, int n);

}  // namespace finemoe::moe::routing
