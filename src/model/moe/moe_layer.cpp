#include "model/moe/moe_layer.h"

#include <algorithm>
#include <string>

#include "backend/cpu/blas.h"
#include "backend/ops.h"
#include "model/layer_support.h"
#include "model/moe/expert_exchange.h"
#include "model/moe/router.h"
#include "parallel/communicator.h"
#include "util/check.h"

namespace finemoe {
template <typename T>
MoeLayer<T>::MoeLayer(const Config& cfg, int block, ParameterStore<T>& store, const MoeComms& comms,
                      int ep_rank, int ep_size)
    : d_model_(cfg.model.d_model),
      n_experts_(cfg.moe.expansion_rate * cfg.moe.granularity),
      n_local_(n_experts_ / ep_size),
      group_size_(cfg.moe.group_size),
      top_k_(cfg.moe.effective_top_k()),
      token_choice_(cfg.moe.routing == "token_choice"),
      aux_weight_(cfg.moe.aux_loss_weight),
      z_weight_(cfg.moe.z_loss_weight),
      store_(store),
      comms_(comms),
      selector_(moe::make_token_selector<T>(cfg.moe.routing, n_experts_, cfg.moe.granularity, top_k_,
                                            cfg.moe.capacity_factor)),
      experts_(n_local_, cfg.model.d_model, cfg.d_expert(), parse_activation(cfg.model.activation)) {
  FINEMOE_CHECK(ep_size >= 1 && n_experts_ % ep_size == 0 && ep_rank >= 0 && ep_rank < ep_size,
                "expert-parallel rank " << ep_rank << " of " << ep_size << " for " << n_experts_ << " experts");
  if (comms.expert_group)
    FINEMOE_CHECK(comms.expert_group->size() == ep_size && comms.expert_group->rank() == ep_rank,
                  "expert group communicator (rank " << comms.expert_group->rank() << " of "
                      << comms.expert_group->size() << ") does not match ep " << ep_rank << " of " << ep_size);
  // Without a communicator and EP > 1 the layer can register its parameters (a dry run) but not run.
  if (comms.expert_group || ep_size == 1)
    dispatcher_ = std::make_unique<moe::AllToAllDispatcher<T>>(comms.expert_group, n_experts_);

  const std::string prefix = "blocks." + std::to_string(block) + ".moe.";
  const double scale = cfg.model.init_scale;
  const int d = d_model_, de = cfg.d_expert();
  // Router: the same scaled truncated normal as every weight matrix, fan_in = d_model.
  router_ = store.add({prefix + "router", {d, n_experts_}, ParamGroup::replicated, fan_in_init(scale, d), block});
  const int64_t first = int64_t(ep_rank) * n_local_;
  w1_ = store.add({prefix + "experts.w1", {n_local_, d, de}, ParamGroup::expert, fan_in_init(scale, d), block,
                   first});
  // The paper: the second matrix uses the dense FFN's fan_in d_ff = 4 d_model, independent of G.
  w2_ = store.add({prefix + "experts.w2", {n_local_, de, d}, ParamGroup::expert, fan_in_init(scale, 4 * d),
                   block, first});
  if (cfg.moe.output_layernorm) out_ln_ = std::make_unique<LayerNorm<T>>(store, prefix + "out_ln", block, d);
  reset_stats();
}

template <typename T>
void MoeLayer<T>::reset_stats() {
  stats_ = FeedForwardStats{};
  stats_.expert_tokens.assign(n_experts_, 0);
  if (dispatcher_) dispatcher_->reset_exchange_stats();
}

template <typename T>
const T* MoeLayer<T>::routing_group_probs(const TokenBatch& batch) {
  const int n_seq = batch.n_seq;
  if (n_seq % group_size_ == 0) {
    FINEMOE_CHECK(batch.first_global_seq % group_size_ == 0,
                  "batch starts at global sequence " << batch.first_global_seq << ", inside a routing group of "
                                                     << group_size_);
    buffer_seqs_ = n_seq;
    my_first_seq_ = 0;
    return probs_.data();
  }
  // The group spans ranks: every rank of it needs the whole group's probabilities.
  Communicator* group = comms_.routing_group;
  FINEMOE_CHECK(group && int64_t(group->size()) * n_seq == group_size_,
                "this rank holds " << n_seq << " sequences; a routing group of " << group_size_
                                   << " sequences needs a routing-group communicator of " << group_size_ / n_seq
                                   << " ranks, have " << (group ? group->size() : 0));
  FINEMOE_CHECK(batch.first_global_seq % group_size_ == int64_t(group->rank()) * n_seq,
                "global sequence " << batch.first_global_seq << " is not at routing-group rank "
                                   << group->rank() << " with " << n_seq << " sequences per rank");
  const size_t count = size_t(tokens_) * n_experts_;
  T* gathered = ensure_size(gathered_probs_, count * group->size());
  group->all_gather(probs_.data(), gathered, count, dtype_of<T>());
  buffer_seqs_ = group_size_;
  my_first_seq_ = group->rank() * n_seq;
  return gathered;
}

template <typename T>
void MoeLayer<T>::select_tokens(const T* group_probs, const TokenBatch& batch) {
  const int gs = group_size_, ctx = context_;
  const bool balance = token_choice_ && aux_weight_ > 0;
  const int groups = buffer_seqs_ / gs;
  if (balance) ensure_size(balance_grad_, size_t(groups) * ctx * n_experts_);
  // Tokens of a group that are this rank's: all of them, or its slice of a spanning group.
  const int local_per_group = buffer_seqs_ == batch.n_seq ? gs : batch.n_seq;
  unsorted_row_.clear();
  unsorted_expert_.clear();
  for (int g = 0; g < groups; ++g) {
    for (int p = 0; p < ctx; ++p) {
      const moe::TokenGroup<T> group{group_probs + (int64_t(g) * gs * ctx + p) * n_experts_,
                                     int64_t(ctx) * n_experts_, gs};
      kept_.clear();
      selector_->select(group, kept_, requested_);
      int64_t kept_local = 0;
      for (const moe::ExpertAssignment& a : kept_) {
        const int seq = g * gs + a.token - my_first_seq_;
        if (seq < 0 || seq >= batch.n_seq) continue;
        unsorted_row_.push_back(seq * ctx + p);
        unsorted_expert_.push_back(a.expert);
        ++kept_local;
      }
      if (token_choice_) {
        stats_.assignments_requested += int64_t(local_per_group) * top_k_;
        stats_.assignments_dropped += int64_t(local_per_group) * top_k_ - kept_local;
      } else {
        stats_.assignments_requested += kept_local;
      }
      if (!balance) continue;
      // Switch loss of the group: n_experts * sum_e f_e P_e, f_e from the requests before drops.
      double loss = 0;
      T* grad = balance_grad_.data() + (int64_t(g) * ctx + p) * n_experts_;
      const double coef = aux_weight_ * batch.loss_scale * n_experts_;
      for (int e = 0; e < n_experts_; ++e) {
        const double f = double(requested_[e]) / (double(gs) * top_k_);
        double mean_p = 0;
        for (int i = 0; i < gs; ++i) mean_p += group.probs[i * group.stride + e];
        mean_p /= gs;
        loss += n_experts_ * f * mean_p;
        grad[e] = static_cast<T>(coef * f);
      }
      aux_loss_ += aux_weight_ * batch.loss_scale * local_per_group * loss;
    }
  }
}

template <typename T>
void MoeLayer<T>::sort_copies() {
  const size_t n = unsorted_row_.size();
  per_expert_.assign(n_experts_, 0);
  for (int32_t e : unsorted_expert_) ++per_expert_[e];
  expert_offset_.assign(n_experts_ + 1, 0);
  for (int e = 0; e < n_experts_; ++e) expert_offset_[e + 1] = expert_offset_[e] + per_expert_[e];
  copy_row_.resize(n);
  copy_expert_.resize(n);
  copy_gate_.resize(n);
  for (size_t c = 0; c < n; ++c) {
    const int e = unsorted_expert_[c];
    const int64_t at = expert_offset_[e]++;
    copy_row_[at] = unsorted_row_[c];
    copy_expert_[at] = e;
    copy_gate_[at] = probs_[int64_t(unsorted_row_[c]) * n_experts_ + e];
  }
  for (int e = 0; e < n_experts_; ++e) stats_.expert_tokens[e] += per_expert_[e];
}

template <typename T>
T* MoeLayer<T>::staged_rows(Buffer<T>& buffer, int64_t copies) {
  return dispatcher_->group_size() > 1 ? ensure_size(buffer, size_t(copies) * d_model_) : nullptr;
}

template <typename T>
template <typename Work>
void MoeLayer<T>::timed_combine(Work&& work) {
  const double exchanged = dispatcher_->exchange_stats().time_s;
  combine_watch_.start();
  work();
  const double seconds = combine_watch_.stop();
  stats_.combine_time_s += std::max(0.0, seconds - (dispatcher_->exchange_stats().time_s - exchanged));
}

template <typename T>
void MoeLayer<T>::forward(const T* x, T* y, const TokenBatch& batch) {
  FINEMOE_CHECK(store_.allocated(), "MoE layer used before its parameters were allocated");
  FINEMOE_CHECK(dispatcher_, "an expert-parallel MoE layer needs MoeComms::expert_group to run");
  tokens_ = batch.tokens();
  ops::copy(ensure_size(x_, size_t(tokens_) * d_model_), x, tokens_ * d_model_);
  context_ = batch.context;
  aux_loss_ = 0;
  has_z_grad_ = false;
  const int d = d_model_;

  router_watch_.start();
  T* logits = ensure_size(logits_, size_t(tokens_) * n_experts_);
  T* probs = ensure_size(probs_, size_t(tokens_) * n_experts_);
  {
    cpu::FlopScope flops(cpu::FlopCategory::router);
    moe::router_forward(x, store_.value(router_), tokens_, d, n_experts_, logits, probs);
  }
  ops::synchronize();  // the routing decisions are made on the host
  if (token_choice_ && z_weight_ > 0) {
    const double scale = z_weight_ * batch.loss_scale;
    T* dlogits = ensure_size(dlogits_, size_t(tokens_) * n_experts_);
    aux_loss_ += scale * moe::router_z_loss(logits, probs, tokens_, n_experts_, scale, dlogits);
    has_z_grad_ = true;
  }
  select_tokens(routing_group_probs(batch), batch);
  sort_copies();
  const int64_t copies = int64_t(copy_row_.size());
  stats_.router_time_s += router_watch_.stop();
  dispatcher_->plan(per_expert_);
  const int64_t received = dispatcher_->received_rows();
  T* x_expert = ensure_size(x_expert_, size_t(received) * d);
  T* y_expert = ensure_size(y_expert_, size_t(received) * d);
  T* x_staged = staged_rows(x_staged_, copies);
  timed_combine([&] { moe::dispatch_to_experts(*dispatcher_, x, copy_row_.data(), d, x_staged, x_expert); });
  expert_watch_.start();
  experts_.forward(store_.value(w1_), store_.value(w2_), x_expert, dispatcher_->received_per_local_expert(),
                   y_expert);
  stats_.expert_gemm_time_s += expert_watch_.stop();

  T* combined = out_ln_ ? ensure_size(y_combined_, size_t(tokens_) * d) : y;
  T* y_staged = staged_rows(y_staged_, copies);
  timed_combine([&] {
    ops::fill_zero(combined, tokens_ * d);
    moe::combine_from_experts(*dispatcher_, y_expert, copy_row_.data(), copy_gate_.data(), d, y_staged, combined);
  });
  if (out_ln_) out_ln_->forward(combined, y, tokens_);
  stats_.alltoall_time_s = dispatcher_->exchange_stats().time_s;
  stats_.alltoall_bytes = dispatcher_->exchange_stats().bytes;
}

template <typename T>
void MoeLayer<T>::backward(const T* dy, T* dx) {
  const int d = d_model_;
  const int64_t copies = int64_t(copy_row_.size());
  const T* dcombined = dy;
  if (out_ln_) {
    T* buf = ensure_size(dy_combined_, size_t(tokens_) * d);
    ops::fill_zero(buf, tokens_ * d);
    out_ln_->backward(dy, buf);
    dcombined = buf;
  }
  const int64_t received = dispatcher_->received_rows();
  T* dy_expert = ensure_size(dy_expert_, size_t(received) * d);
  T* dx_expert = ensure_size(dx_expert_, size_t(received) * d);
  T* dy_staged = staged_rows(dy_staged_, copies);
  T* dgate = ensure_size(dgate_, size_t(copies));
  timed_combine([&] {
    moe::combine_backward_to_experts(*dispatcher_, dcombined, y_expert_.data(), y_staged_.data(), copy_row_.data(),
                                     copy_gate_.data(), d, dy_staged, dy_expert, dgate);
  });
  expert_watch_.start();
  experts_.backward(store_.value(w1_), store_.value(w2_), dy_expert, dx_expert, store_.grad(w1_),
                    store_.grad(w2_));
  stats_.expert_gemm_time_s += expert_watch_.stop();
  T* dx_staged = staged_rows(dx_staged_, copies);
  timed_combine([&] {
    ops::fill_zero(dx, tokens_ * d);
    moe::scatter_add_from_experts(*dispatcher_, dx_expert, copy_row_.data(), d, dx_staged, dx);
  });

  router_watch_.start();
  ops::synchronize();  // dgate, on the host below
  const size_t n_probs = size_t(tokens_) * n_experts_;
  T* dprobs = ensure_size(dprobs_, n_probs);
  std::fill(dprobs, dprobs + n_probs, T(0));
  for (int64_t c = 0; c < copies; ++c) dprobs[int64_t(copy_row_[c]) * n_experts_ + copy_expert_[c]] += dgate[c];
  if (token_choice_ && aux_weight_ > 0) {
    // Every token of a group gets its group's d balance / d p (this rank's tokens only).
    for (int64_t t = 0; t < tokens_; ++t) {
      const int64_t seq = my_first_seq_ + t / context_, pos = t % context_;
      const T* grad = balance_grad_.data() + ((seq / group_size_) * context_ + pos) * n_experts_;
      for (int e = 0; e < n_experts_; ++e) dprobs[t * n_experts_ + e] += grad[e];
    }
  }
  T* dlogits = ensure_size(dlogits_, n_probs);
  if (!has_z_grad_) std::fill(dlogits, dlogits + n_probs, T(0));
  {
    cpu::FlopScope flops(cpu::FlopCategory::router);
    moe::router_backward(x_.data(), store_.value(router_), probs_.data(), dprobs, dlogits, tokens_, d, n_experts_, dx,
                         store_.grad(router_));
  }
  stats_.router_time_s += router_watch_.stop();
  stats_.alltoall_time_s = dispatcher_->exchange_stats().time_s;
  stats_.alltoall_bytes = dispatcher_->exchange_stats().bytes;
}

template <typename T>
std::unique_ptr<FeedForwardLayer<T>> make_moe_layer(const Config& cfg, int block, ParameterStore<T>& store,
                                                    const MoeComms& comms, int ep_rank, int ep_size) {
  return std::make_unique<MoeLayer<T>>(cfg, block, store, comms, ep_rank, ep_size);
}

template class MoeLayer<float>;
template class MoeLayer<double>;
template std::unique_ptr<FeedForwardLayer<float>> make_moe_layer<float>(const Config&, int, ParameterStore<float>&,
                                                                        const MoeComms&, int, int);
template std::unique_ptr<FeedForwardLayer<double>> make_moe_layer<double>(const Config&, int,
                                                                          ParameterStore<double>&,
                                                                          const MoeComms&, int, int);

}  // namespace finemoe
