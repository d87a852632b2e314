#include "model/attention.h"

#include "backend/ops.h"
#include "backend/cpu/blas.h"
#include "model/layer_support.h"
#include "util/check.h"

namespace finemoe {

template <typename T>
CausalSelfAttention<T>::CausalSelfAttention(ParameterStore<T>& store, int block, int d, int n_heads,
                                            double init_scale, AttentionScratch<T>& scratch)
    : store_(store), d_(d), n_heads_(n_heads), scratch_(scratch) {
  FINEMOE_CHECK(d % n_heads == 0, "d_model " << d << " is not a multiple of n_heads " << n_heads);
  const std::string prefix = "blocks." + std::to_string(block) + ".attn.";
  qkv_w_ = store.add({prefix + "qkv", {d, 3 * d}, ParamGroup::replicated, fan_in_init(init_scale, d), block});
  out_w_ = store.add({prefix + "out", {d, d}, ParamGroup::replicated, fan_in_init(init_scale, d), block});
}

template <typename T>
void CausalSelfAttention<T>::forward(const T* x, T* y, const TokenBatch& batch) {
  n_seq_ = batch.n_seq;
  seq_len_ = batch.context;
  const int64_t n = batch.tokens();
  const int rows = static_cast<int>(n);
  x_ = x;
  if (bf16_activation_storage()) kept_x_.keep_copy(x, size_t(n) * d_);
  const ops::Operand<T> x_operand = kept_x_.operand(x);  // its bf16 copy with bf16 operands
  T* qkv = qkv_.forward_buffer(n * 3 * d_, scratch_.qkv_work);
  fused_ = ops::attention_fused<T>(n_seq_);
  const int64_t kept = ops::attention_kept_size<T>(n_seq_, seq_len_, n_heads_);
  T* att = fused_ ? ensure_size(stats_, size_t(kept)) : att_.forward_buffer(size_t(kept), scratch_.att_work);
  T* heads = heads_.forward_buffer(n * d_, scratch_.heads_work);
  {
    cpu::FlopScope flops(cpu::FlopCategory::attention_projection);
    ops::gemm<T>(false, false, rows, 3 * d_, d_, T(1), x_operand, d_, store_.operand(qkv_w_), 3 * d_, T(0), qkv,
                 3 * d_);
  }
  ops::attention_forward<T>(heads, att, qkv, n_seq_, seq_len_, n_heads_, d_);
  qkv_.keep();
  if (!fused_) att_.keep();
  heads_.keep();
  cpu::FlopScope flops(cpu::FlopCategory::attention_projection);
  ops::gemm<T>(false, false, rows, d_, d_, T(1), heads_.operand(heads), d_, store_.operand(out_w_), d_, T(0), y, d_);
}

template <typename T>
void CausalSelfAttention<T>::backward(const T* dy, T* dx) {
  const int64_t n = int64_t(n_seq_) * seq_len_;
  const int rows = static_cast<int>(n);
  T* dqkv = ensure_size(scratch_.dqkv, n * 3 * d_);
  T* datt = fused_ ? nullptr : ensure_size(scratch_.datt, att_.size());
  T* dheads = ensure_size(scratch_.dheads, n * d_);
  const T* qkv = qkv_.restore(scratch_.qkv_work);
  const T* att = fused_ ? stats_.data() : att_.restore(scratch_.att_work);
  const T* heads = heads_.restore(scratch_.heads_work);
  {
    cpu::FlopScope flops(cpu::FlopCategory::attention_projection);
    // y = heads W_out: dW_out += heads^T dy, dheads = dy W_out^T.
    if (bf16_operands()) ensure_size(scratch_.gradient16, size_t(n) * 3 * d_);  // dqkv's size: allocated once
    const ops::Operand<T> dy_operand = ops::operand_for_products(dy, n * d_, scratch_.gradient16);
    ops::gemm<T>(true, false, d_, d_, rows, T(1), heads_.operand(heads), d_, dy_operand, d_, T(1),
                 store_.grad(out_w_), d_);
    ops::gemm<T>(false, true, rows, d_, d_, T(1), dy_operand, d_, store_.operand(out_w_), d_, T(0), dheads, d_);
  }
  ops::attention_backward<T>(dqkv, datt, dheads, qkv, att, heads, n_seq_, seq_len_, n_heads_, d_);
  cpu::FlopScope flops(cpu::FlopCategory::attention_projection);
  // qkv = x W_qkv: dW_qkv += x^T dqkv, dx = dqkv W_qkv^T.
  const ops::Operand<T> x = bf16_activation_storage() ? kept_x_.backward_operand(scratch_.x_work) : ops::Operand<T>(x_);
  const ops::Operand<T> dqkv_operand = ops::operand_for_products<T>(dqkv, n * 3 * d_, scratch_.gradient16);
  ops::gemm<T>(true, false, d_, 3 * d_, rows, T(1), x, d_, dqkv_operand, 3 * d_, T(1), store_.grad(qkv_w_), 3 * d_);
  ops::gemm<T>(false, true, rows, d_, 3 * d_, T(1), dqkv_operand, 3 * d_, store_.operand(qkv_w_), 3 * d_, T(0), dx,
               d_);
}

template class CausalSelfAttention<float>;
template class CausalSelfAttention<double>;

}  // namespace finemoe
