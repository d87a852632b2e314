#include "model/moe/routing_ops.h"

#include "backend/device_dispatch.h"
#ifdef FINEMOE_WITH_CUDA
#include "kernels/moe_routing.h"
#endif

namespace finemoe::moe::routing {
#ifdef FINEMOE_WITH_CUDA
#define FINEMOE_STREAM ops::device::compute_stream()
#endif

size_t workspace_bytes(const RoutingShape& s) {
#ifdef FINEMOE_WITH_CUDA
  if (on_device()) return cuda::route_tokens_workspace_bytes(s);
#endif
  (void)s;
  return 0;
}

template <typename T>
void route_tokens(const T* group_probs, const T* local_probs, const RoutingShape& s, int32_t* copy_row,
                  int32_t* copy_expert, T* copy_gate, int64_t* per_expert, int32_t* requested, void* workspace,
                  size_t workspace_bytes) {
  FINEMOE_ON_DEVICE_RETURN(cuda::route_tokens(group_probs, local_probs, s, copy_row, copy_expert, copy_gate,
                                               per_expert, requested, workspace, workspace_bytes, FINEMOE_STREAM))
  (void)workspace;
  (void)workspace_bytes;
  cpu::route_tokens<T>(group_probs, local_probs, s, copy_row, copy_expert, copy_gate, per_expert, requested);
}

template <typename T>
void balance_loss(const T* group_probs, const int32_t* requested, const RoutingShape& s, double coef,
                  int local_tokens_per_slot, T* grad, double* loss_sum) {
  FINEMOE_ON_DEVICE_RETURN(
      cuda::balance_loss(group_probs, requested, s, coef, local_tokens_per_slot, grad, loss_sum, FINEMOE_STREAM))
  cpu::balance_loss<T>(group_probs, requested, s, coef, local_tokens_per_slot, grad, loss_sum);
}

template <typename T>
void router_z_loss(const T* logits, const T* probs, int64_t rows, int n_experts, double scale, T* dlogits,
                   double* loss_sum) {
  FINEMOE_ON_DEVICE_RETURN(
      cuda::router_z_loss(logits, probs, rows, n_experts, scale, dlogits, loss_sum, FINEMOE_STREAM))
  cpu::router_z_loss<T>(logits, probs, rows, n_experts, scale, dlogits, loss_sum);
}

template <typename T>
void routing_backward(const T* dgate, const int32_t* copy_row, const int32_t* copy_expert, int64_t copies,
                      const T* balance_grad, const RoutingShape& s, T* dprobs) {
  FINEMOE_ON_DEVICE_RETURN(
      cuda::routing_backward(dgate, copy_row, copy_expert, copies, balance_grad, s, dprobs, FINEMOE_STREAM))
  cpu::routing_backward<T>(dgate, copy_row, copy_expert, copies, balance_grad, s, dprobs);
}

template <typename T>
void softmax_backward_accumulate(const T* probs, const T* dprobs, T* dlogits, int64_t rows, int n) {
  FINEMOE_ON_DEVICE_RETURN(cuda::softmax_backward_accumulate(probs, dprobs, dlogits, rows, n, FINEMOE_STREAM))
  cpu::softmax_backward_accumulate<T>(probs, dprobs, dlogits, rows, n);
}

#undef FINEMOE_ROUTING_ON_DEVICE
#undef FINEMOE_STREAM

#define FINEMOE_ROUTING_OPS(T)                                                                                  \
  template void route_tokens<T>(const T*, const T*, const RoutingShape&, int32_t*, int32_t*, T*, int64_t*,     \
                                int32_t*, void*, size_t);                                                     \
  template void balance_loss<T>(const T*, const int32_t*, const RoutingShape&, double, int, T*, double*);      \
  template void router_z_loss<T>(const T*, const T*, int64_t, int, double, T*, double*);                       \
  template void routing_backward<T>(const T*, const int32_t*, const int32_t*, int64_t, const T*,               \
                                    const RoutingShape&, T*);                                                  \
  template void softmax_backward_accumulate<T>(const T*, const T*, T*, int64_t, int);
FINEMOE_ROUTING_OPS(float)
FINEMOE_ROUTING_OPS(double)
#undef FINEMOE_ROUTING_OPS

}  // namespace finemoe::moe::routing
