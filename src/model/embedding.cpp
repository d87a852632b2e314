#include "model/embedding.h"

#include "backend/ops.h"
#include "model/layer_support.h"
#include "util/check.h"

namespace finemoe {

template <typename T>
Embedding<T>::Embedding(ParameterStore<T>& store, int vocab, int context, int d, double init_scale)
    : store_(store), vocab_(vocab), context_(context), d_(d) {
  token_ = store.add({"embed.token", {vocab, d}, ParamGroup::replicated, fan_in_init(init_scale, d), -1});
  position_ = store.add({"embed.position", {context, d}, ParamGroup::replicated, fan_in_init(init_scale, d), -1});
}

template <typename T>
void Embedding<T>::forward(const int32_t* tokens, const TokenBatch& batch, T* out) {
  FINEMOE_CHECK(batch.context <= context_, "sequence length " << batch.context << " exceeds model.context "
                                                              << context_);
  for (int64_t i = 0; i < batch.tokens(); ++i)
    FINEMOE_CHECK(tokens[i] >= 0 && tokens[i] < vocab_, "token " << tokens[i] << " at " << i
                                                                 << " outside the vocabulary [0, " << vocab_ << ")");
  tokens_ = tokens;
  n_seq_ = batch.n_seq;
  seq_len_ = batch.context;
  ops::embedding_forward<T>(out, tokens, store_.value(token_), store_.value(position_), n_seq_, seq_len_, d_);
}

template <typename T>
void Embedding<T>::backward(const T* dout) {
  ops::embedding_backward<T>(store_.grad(token_), store_.grad(position_), dout, tokens_, n_seq_, seq_len_, d_);
}

template class Embedding<float>;
template class Embedding<double>;

}  // namespace finemoe
