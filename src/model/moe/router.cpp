#include "model/moe/router.h"

#include "backend/ops.h"
#include "model/moe/routing_ops.h"

namespace finemoe::moe {

template <typename T>
void router_forward(const T* x, ops::Operand<T> w, int64_t rows, int d_model, int n_experts, T* logits, T* probs) {
  if (rows == 0) return;
  ops::gemm<T>(false, false, static_cast<int>(rows), n_experts, d_model, T(1), x, d_model, w, n_experts, T(0),
               logits, n_experts);
  ops::row_softmax<T>(logits, probs, rows, n_experts);
}

template <typename T>
void router_backward(const T* x, ops::Operand<T> w, const T* probs, const T* dprobs, T* dlogits, int64_t rows,
                     int d_model, int n_experts, T* dx, T* dw) {
  if (rows == 0) return;
  routing::softmax_backward_accumulate(probs, dprobs, dlogits, rows, n_experts);
  const int m = static_cast<int>(rows);
  ops::gemm<T>(true, false, d_model, n_experts, m, T(1), x, d_model, dlogits, n_experts, T(1), dw, n_experts);
  ops::gemm<T>(false, true, m, d_model, n_experts, T(1), dlogits, n_experts, w, n_experts, T(1), dx, d_model);
}

#define FINEMOE_ROUTER(T)                                                                               \
  template void router_forward<T>(const T*, ops::Operand<T>, int64_t, int, int, T*, T*);               \
  template void router_backward<T>(const T*, ops::Operand<T>, const T*, const T*, T*, int64_t, int, int, T*, T*);
FINEMOE_ROUTER(float)
FINEMOE_ROUTER(double)
#undef FINEMOE_ROUTER

}  // namespace finemoe::moe
