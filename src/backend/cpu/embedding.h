#pragma once
// Token + learned absolute position embedding.
#include <cstdint>

namespace finemoe::cpu {

// out[s, p, :] = wte[tokens[s, p], :] + wpe[p, :] for n_seq sequences of `context` tokens;
// out is [n_seq * context, d], wte [vocab, d], wpe [context, d].
template <typename T>
void embedding_forward(T* out, const int32_t* tokens, const T* wte, const T* wpe, int n_seq, int context,
                       int d);

// Accumulates (+=) dout into the rows of dwte and dwpe that the forward read.
template <typename T>
void embedding_backward(T* dwte, T* dwpe, const T* dout, const int32_t* tokens, int n_seq, int context,
                        int d);

}  // namespace finemoe::cpu
