#pragma once
// The decoder-only pre-LayerNorm Transformer on the CPU backend:
//   x = embed.token[tokens] + embed.position;  per block: x += attn(ln1(x)); x += ffn(ln2(x));
//   logits = ln_f(x) W_head (W_head = embed.token^T when tied); loss = cross-entropy.
// Forward and backward are written out layer by layer (no autodiff).
//
// Parameters, registered in forward order: embed.token [vocab, d], embed.position [context, d]
// (block -1); per block b: blocks.b.ln1.weight|bias, blocks.b.attn.qkv [d, 3d],
// blocks.b.attn.out [d, d], blocks.b.ln2.weight|bias, then the FFN's (dense: blocks.b.ffn.w1
// [d, 4d], blocks.b.ffn.w2 [4d, d]); ln_f.weight|bias, head.weight [d, vocab] if untied (block -1).
// Init: weight matrices truncated normal with std sqrt(init_scale / fan_in), fan_in = rows;
// embeddings likewise with fan_in = d (the token table is the tied head matrix); LayerNorm 1 / 0.
// Weight decay: every matrix (embeddings and head included, as GPT-2/llm.c); not LayerNorms.
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "backend/compute.h"
#include "backend/ops.h"
#include "config/config.h"
#include "model/attention.h"
#include "model/dense_ffn.h"
#include "model/embedding.h"
#include "model/feed_forward.h"
#include "model/layer_norm.h"
#include "model/model_counts.h"
#include "model/output_head.h"
#include "model/parameters.h"

namespace finemoe {

template <typename T>
class Model {
 public:
  using FfnFactory = std::function<std::unique_ptr<FeedForwardLayer<T>>(int block, ParameterStore<T>& store)>;

  // Registers the parameters; the caller then calls store.allocate(seed).
  Model(const Config& cfg, ParameterStore<T>& store, FfnFactory make_ffn);
  // Blocks refer to the model's shared scratch: a Model stays where it was built.
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  // One micro-batch on this rank (inputs, targets: [batch.tokens()], compute-backend memory).
  // Adds the SUM of the per-token cross-entropy and the FFN layers' weighted auxiliary losses to
  // loss_sums() without waiting for the device; parameter gradients accumulate into the store,
  // scaled by batch.loss_scale. block_done(b) is called once block b's gradients are final (b =
  // n_blocks-1 ... 0, then -1 for the embeddings, ln_f and head).
  void accumulate_forward_backward(const int32_t* inputs, const int32_t* targets, const TokenBatch& batch,
                                   const std::function<void(int)>& block_done = {});
  // The same sums without gradients.
  void accumulate_loss(const int32_t* inputs, const int32_t* targets, const TokenBatch& batch);
  // [cross-entropy sum, auxiliary loss sum] in compute-backend memory since zero_loss_sums().
  const double* loss_sums() const { return loss_sums_.data(); }
  void zero_loss_sums();
  // One micro-batch from zeroed sums, read back (one host wait): returns the cross-entropy sum
  // and keeps the auxiliary sum for aux_loss().
  double forward_backward(const int32_t* inputs, const int32_t* targets, const TokenBatch& batch,
                          const std::function<void(int)>& block_done = {});
  double forward_loss(const int32_t* inputs, const int32_t* targets, const TokenBatch& batch);
  // The auxiliary loss sum read by the last forward_backward / forward_loss.
  double aux_loss() const { return aux_loss_; }
  // Seconds in the attention layers (forward and backward) since the last take (waits once).
  double take_attention_seconds() { return attention_watch_.take_seconds(); }
  void reset_attention_time() { attention_watch_.reset(); }
  // Logits of the last forward, [batch.tokens(), vocab].
  const T* logits() const { return head_->logits(); }
  std::vector<FeedForwardLayer<T>*> ffn_layers();
  ModelCounts counts() const { return count_parameters(cfg_, store_); }

 private:
  struct Block {
    Block(const Config& cfg, ParameterStore<T>& store, int b, const FfnFactory& make_ffn,
          AttentionScratch<T>& scratch);
    LayerNorm<T> ln1;
    CausalSelfAttention<T> attn;
    LayerNorm<T> ln2;
    std::unique_ptr<FeedForwardLayer<T>> ffn;
  };

  std::vector<std::unique_ptr<Block>> make_blocks(const FfnFactory& make_ffn);
  void forward(const int32_t* inputs, const int32_t* targets, const TokenBatch& batch, bool grad);
  double read_loss_sums();
  void backward(const std::function<void(int)>& block_done);
  T* residual(int b) { return resid_.data() + b * rows_ * d_; }

  Config cfg_;
  ParameterStore<T>& store_;
  int d_;
  AttentionScratch<T> attention_scratch_;
  // Declared (so constructed, so registered) in forward order.
  Embedding<T> embedding_;
  std::vector<std::unique_ptr<Block>> blocks_;
  LayerNorm<T> ln_f_;
  std::unique_ptr<OutputHead<T>> head_;

  int64_t rows_ = 0;  // tokens of the current micro-batch
  double aux_loss_ = 0;
  DeviceBuffer<double> loss_sums_;
  ops::Stopwatch attention_watch_;
  // Activations (kept for backward): residual stream at each block's input and after its
  // attention (fp32 in every precision), ln1 outputs (one block's with bf16 activation storage,
  // where the attention layers keep bf16 copies), ln_f output. The rest is scratch reused by
  // every block.
  DeviceBuffer<T> resid_, mid_, ln1_out_, lnf_out_, ln2_out_, branch_, dresid_, dscratch_;
};

}  // namespace finemoe
