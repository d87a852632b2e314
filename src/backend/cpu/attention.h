#pragma once
// Causal multi-head self-attention, the part between the QKV and output projections (those are
// plain GEMMs done by the caller). Rows are tokens, row = seq * context + pos.
#include <cstdint>

namespace finemoe::cpu {

// qkv: [n_seq * context, 3 d] with Q, K, V side by side, head h at columns h * d / n_heads.
// Per sequence and head: att = causal_softmax(Q K^T / sqrt(head_dim)) (entries above the
// diagonal are 0), out = att V; out [n_seq * context, d] has the heads side by side.
// att [n_seq, n_heads, context, context] is kept for backward.
template <typename T>
void attention_forward(T* out, T* att, const T* qkv, int n_seq, int context, int n_heads, int d);

// dqkv (overwritten) from dout; datt is scratch of att's size.
template <typename T>
void attention_backward(T* dqkv, T* datt, const T* dout, const T* qkv, const T* att, int n_seq, int context,
                        int n_heads, int d);

}  // namespace finemoe::cpu
