#pragma once
// Token and learned absolute position embeddings, summed.
#include <cstdint>

#include "model/feed_forward.h"
#include "model/parameters.h"

namespace finemoe {

template <typename T>
class Embedding {
 public:
  // Registers `embed.token` [vocab, d] and `embed.position` [context, d] (block -1), both with
  // std sqrt(init_scale / d): the token table doubles as the tied output matrix, whose fan-in is d.
  Embedding(ParameterStore<T>& store, int vocab, int context, int d, double init_scale);
  // tokens: [batch.tokens()], each < vocab; out: [batch.tokens(), d].
  void forward(const int32_t* tokens, const TokenBatch& batch, T* out);
  // Accumulates dout into the table gradients.
  void backward(const T* dout);
  ParamHandle token_table() const { return token_; }

 private:
  ParameterStore<T>& store_;
  ParamHandle token_, position_;
  int vocab_, context_, d_;
  const int32_t* tokens_ = nullptr;
  int n_seq_ = 0, seq_len_ = 0;
};

}  // namespace finemoe
