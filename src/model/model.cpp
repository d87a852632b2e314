#include "model/model.h"

#include <algorithm>

#include "backend/ops.h"
#include "backend/cpu/blas.h"
#include "model/layer_support.h"
#include "util/check.h"

namespace finemoe {
namespace {
template <typename T>
std::unique_ptr<OutputHead<T>> make_head(const Config& cfg, ParameterStore<T>& store, const Embedding<T>& embedding) {
  const ModelConfig& m = cfg.model;
  if (m.tied_embeddings) return std::make_unique<OutputHead<T>>(store, m.d_model, m.vocab, embedding.token_table());
  return std::make_unique<OutputHead<T>>(store, m.d_model, m.vocab, m.init_scale);
}
}  // namespace

template <typename T>
Model<T>::Block::Block(const Config& cfg, ParameterStore<T>& store, int b, const FfnFactory& make_ffn,
                       AttentionScratch<T>& scratch)
    : ln1(store, "blocks." + std::to_string(b) + ".ln1", b, cfg.model.d_model),
      attn(store, b, cfg.model.d_model, cfg.model.n_heads, cfg.model.init_scale, scratch),
      ln2(store, "blocks." + std::to_string(b) + ".ln2", b, cfg.model.d_model),
      ffn(make_ffn(b, store)) {
  FINEMOE_CHECK(ffn != nullptr, "the FFN factory returned no layer for block " << b);
}

template <typename T>
Model<T>::Model(const Config& cfg, ParameterStore<T>& store, FfnFactory make_ffn)
    : cfg_(cfg),
      store_(store),
      d_(cfg.model.d_model),
      embedding_(store, cfg.model.vocab, cfg.model.context, cfg.model.d_model, cfg.model.init_scale),
      blocks_(make_blocks(make_ffn)),
      ln_f_(store, "ln_f", -1, cfg.model.d_model),
      head_(make_head(cfg, store, embedding_)),
      loss_sums_(2) {}

template <typename T>
std::vector<std::unique_ptr<typename Model<T>::Block>> Model<T>::make_blocks(const FfnFactory& make_ffn) {
  std::vector<std::unique_ptr<Block>> blocks;
  for (int b = 0; b < cfg_.model.n_blocks; ++b)
    blocks.push_back(std::make_unique<Block>(cfg_, store_, b, make_ffn, attention_scratch_));
  return blocks;
}

template <typename T>
std::vector<FeedForwardLayer<T>*> Model<T>::ffn_layers() {
  std::vector<FeedForwardLayer<T>*> layers;
  for (auto& b : blocks_) layers.push_back(b->ffn.get());
  return layers;
}

template <typename T>
void Model<T>::forward(const int32_t* inputs, const int32_t* targets, const TokenBatch& batch, bool grad) {
  FINEMOE_CHECK(store_.allocated(), "model parameters used before ParameterStore::allocate");
  // Every forward: the values may have changed since (optimizer, checkpoint, a test), and one pass
  // over the parameters costs little beside a micro-batch's products.
  store_.round_values();
  rows_ = batch.tokens();
  const int64_t nd = rows_ * d_;
  const int n_blocks = static_cast<int>(blocks_.size());
  ensure_size(resid_, (n_blocks + 1) * nd);
  T* mid = ensure_size(mid_, n_blocks * nd);
  // bf16 activation storage: the attention layers keep bf16 copies of their inputs, so one block's
  // ln1 output is enough; full storage keeps every block's for the attention backward.
  const int ln1_blocks = bf16_activation_storage() ? 1 : n_blocks;
  T* ln1_out = ensure_size(ln1_out_, ln1_blocks * nd);
  T* ln2_out = ensure_size(ln2_out_, nd);
  T* branch = ensure_size(branch_, nd);
  T* lnf_out = ensure_size(lnf_out_, nd);

  embedding_.forward(inputs, batch, residual(0));
  for (int b = 0; b < n_blocks; ++b) {
    Block& blk = *blocks_[b];
    T* x = residual(b);
    T* m = mid + b * nd;
    T* a = ln1_out + (b % ln1_blocks) * nd;
    blk.ln1.forward(x, a, rows_);
    attention_watch_.start();
    blk.attn.forward(a, branch, batch);
    attention_watch_.stop();
    ops::add(m, x, branch, nd);
    blk.ln2.forward(m, ln2_out, rows_);
    {
      cpu::FlopScope flops(cpu::FlopCategory::ffn);
      blk.ffn->forward(ln2_out, branch, batch);
    }
    ops::add(residual(b + 1), m, branch, nd);
    if (const double* aux = blk.ffn->aux_loss_sum()) ops::accumulate(loss_sums_.data() + 1, aux, 1);
  }
  ln_f_.forward(residual(n_blocks), lnf_out, rows_);
  head_->forward(lnf_out, targets, rows_, grad, static_cast<T>(batch.loss_scale), loss_sums_.data());
}

template <typename T>
void Model<T>::backward(const std::function<void(int)>& block_done) {
  const int64_t nd = rows_ * d_;
  T* dresid = ensure_size(dresid_, nd);
  T* dscratch = ensure_size(dscratch_, nd);
  head_->backward(dscratch);
  ops::fill_zero(dresid, nd);
  ln_f_.backward(dscratch, dresid);
  for (int b = static_cast<int>(blocks_.size()) - 1; b >= 0; --b) {
    Block& blk = *blocks_[b];
    {
      cpu::FlopScope flops(cpu::FlopCategory::ffn);
      blk.ffn->backward(dresid, dscratch);
    }
    blk.ln2.backward(dscratch, dresid);
    attention_watch_.start();
    blk.attn.backward(dresid, dscratch);
    attention_watch_.stop();
    blk.ln1.backward(dscratch, dresid);
    if (block_done) block_done(b);
  }
  embedding_.backward(dresid);
  if (block_done) block_done(-1);
}

template <typename T>
void Model<T>::accumulate_forward_backward(const int32_t* inputs, const int32_t* targets, const TokenBatch& batch,
                                           const std::function<void(int)>& block_done) {
  forward(inputs, targets, batch, true);
  backward(block_done);
}

template <typename T>
void Model<T>::accumulate_loss(const int32_t* inputs, const int32_t* targets, const TokenBatch& batch) {
  forward(inputs, targets, batch, false);
}

template <typename T>
void Model<T>::zero_loss_sums() {
  ops::fill_zero(loss_sums_.data(), 2);
}

template <typename T>
double Model<T>::read_loss_sums() {
  double sums[2];
  copy_to_host(sums, loss_sums_.data(), 2);
  aux_loss_ = sums[1];
  return sums[0];
}

template <typename T>
double Model<T>::forward_backward(const int32_t* inputs, const int32_t* targets, const TokenBatch& batch,
                                  const std::function<void(int)>& block_done) {
  zero_loss_sums();
  accumulate_forward_backward(inputs, targets, batch, block_done);
  return read_loss_sums();
}

template <typename T>
double Model<T>::forward_loss(const int32_t* inputs, const int32_t* targets, const TokenBatch& batch) {
  zero_loss_sums();
  accumulate_loss(inputs, targets, batch);
  return read_loss_sums();
}

template class Model<float>;
template class Model<double>;

}  // namespace finemoe
