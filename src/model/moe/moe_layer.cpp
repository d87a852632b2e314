#include "model/moe/moe_layer.h"

#include <algorithm>
#include <string>

#include "backend/cpu/blas.h"
#include "backend/cpu/selection_bias.h"
#include "backend/ops.h"
#include "model/layer_support.h"
#include "model/moe/expert_exchange.h"
#include "model/moe/router.h"
#include "parallel/communicator.h"
#include "util/check.h"

namespace finemoe {
template <typename T>
MoeLayer<T>::MoeLayer(const Config& cfg, int block, ParameterStore<T>& store, const MoeComms& comms,
                      int ep_rank, int ep_size, std::shared_ptr<MoeScratch<T>> scratch)
    : d_model_(cfg.model.d_model),
      n_experts_(cfg.moe.expansion_rate * cfg.moe.granularity),
      n_local_(n_experts_ / ep_size),
      granularity_(cfg.moe.routed_granularity()),
      group_size_(cfg.moe.group_size),
      top_k_(cfg.moe.effective_top_k()),
      capacity_factor_(cfg.moe.capacity_factor),
      token_choice_(cfg.moe.routing == "token_choice"),
      aux_weight_(cfg.moe.aux_loss_weight),
      z_weight_(cfg.moe.z_loss_weight),
      store_(store),
      comms_(comms),
      experts_(n_local_, cfg.model.d_model, cfg.d_expert(), parse_activation(cfg.model.activation),
               cfg.moe.routing == "expert_choice"),
      scratch_(scratch ? std::move(scratch) : std::make_shared<MoeScratch<T>>()) {
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
  const FfnActivation activation = parse_activation(cfg.model.activation);
  // Router: the same scaled truncated normal as every weight matrix, fan_in = d_model.
  router_ = store.add({prefix + "router", {d, n_experts_}, ParamGroup::replicated, fan_in_init(scale, d), block});
  const int64_t first = int64_t(ep_rank) * n_local_;
  w1_ = store.add({prefix + "experts.w1", {n_local_, d, activation.pre_width(de)}, ParamGroup::expert,
                   fan_in_init(scale, d), block, first});
  // The paper: the second matrix uses the dense FFN's fan_in d_ff (4 d_model), independent of G.
  w2_ = store.add({prefix + "experts.w2", {n_local_, de, d}, ParamGroup::expert, fan_in_init(scale, cfg.d_ff()),
                   block, first});
  if (cfg.moe.bias_balance()) {
    bias_rate_ = cfg.moe.bias_rate;
    ParamSpec bias{prefix + "router_bias", {n_experts_}, ParamGroup::replicated, ParamInit::zeros(), block};
    bias.weight_decay = false;
    router_bias_ = store.add(bias);
  }
  if (cfg.moe.shared_experts > 0)
    shared_ = std::make_unique<DenseFeedForward<T>>(store, prefix + "shared.", block, d, cfg.moe.shared_experts * de,
                                                    activation, scale, cfg.d_ff(), scratch_->shared_experts);
  if (cfg.moe.output_layernorm) out_ln_ = std::make_unique<LayerNorm<T>>(store, prefix + "out_ln", block, d);
  FINEMOE_CHECK(cfg.moe.routing == "token_choice" || cfg.moe.routing == "expert_choice",
                "moe.routing = '" << cfg.moe.routing << "'");
  balance_ = token_choice_ && aux_weight_ > 0 && !cfg.moe.bias_balance();
  aux_sum_.resize(1);
  reset_stats();
}

template <typename T>
void MoeLayer<T>::reset_stats() {
  stats_ = FeedForwardStats{};
  stats_.expert_tokens.assign(n_experts_, 0);
  exchange_in_combine_s_ = 0;
  router_watch_.reset();
  expert_watch_.reset();
  combine_watch_.reset();
  if (dispatcher_) dispatcher_->reset_exchange_stats();
}

template <typename T>
void MoeLayer<T>::update_routing_bias(const int64_t* world_load) {
  FINEMOE_CHECK(bias_rate_ > 0, "update_routing_bias without moe.balance = bias");
  std::vector<T> delta(static_cast<size_t>(n_experts_));
  cpu::selection_bias_step(delta.data(), world_load, n_experts_, bias_rate_);
  T* device_delta = ensure_size(scratch_->bias_delta, size_t(n_experts_));
  copy_to_device(device_delta, delta.data(), delta.size());
  T* bias = store_.value(router_bias_);
  ops::add(bias, bias, device_delta, n_experts_);
}

template <typename T>
const FeedForwardStats& MoeLayer<T>::stats() {
  stats_.router_time_s += router_watch_.take_seconds();
  stats_.expert_gemm_time_s += expert_watch_.take_seconds();
  stats_.combine_time_s += std::max(0.0, combine_watch_.take_seconds() - exchange_in_combine_s_);
  exchange_in_combine_s_ = 0;
  if (dispatcher_) {
    stats_.alltoall_time_s = dispatcher_->exchange_stats().time_s;
    stats_.alltoall_bytes = dispatcher_->exchange_stats().bytes;
  }
  return stats_;
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
moe::routing::RoutingShape MoeLayer<T>::routing_shape(int buffer_seqs, int first_local_seq, int local_seqs) const {
  moe::routing::RoutingShape s;
  s.groups = buffer_seqs / group_size_;
  s.group_size = group_size_;
  s.context = context_;
  s.n_experts = n_experts_;
  s.granularity = granularity_;
  s.top_k = top_k_;
  s.capacity_factor = capacity_factor_;
  s.token_choice = token_choice_;
  s.first_local_seq = first_local_seq;
  s.local_seqs = local_seqs;
  return s;
}

template <typename T>
void MoeLayer<T>::count_copies() {
  const size_t E = size_t(n_experts_);
  per_expert_.resize(E);
  const bool exchange_here = !shape_.static_counts() && dispatcher_->group_size() > 1 &&
                             comms_.expert_group_takes_compute_memory;
  if (shape_.static_counts()) {
    std::fill(per_expert_.begin(), per_expert_.end(), shape_.slots() * shape_.capacity());
    dispatcher_->plan(per_expert_, true);
  } else if (exchange_here) {
    // [sent per expert | received per (source, local expert)]: exchanged, then one transfer.
    comms_.expert_group->all_to_all(counts_device_.data(), counts_device_.data() + E, size_t(n_local_), DType::i64);
    std::vector<int64_t> counts(2 * E);
    copy_to_host(counts.data(), counts_device_.data(), counts.size());
    std::copy_n(counts.begin(), E, per_expert_.begin());
    dispatcher_->plan_received(per_expert_, std::vector<int64_t>(counts.begin() + int64_t(E), counts.end()));
  } else {
    copy_to_host(per_expert_.data(), counts_device_.data(), E);
    dispatcher_->plan(per_expert_);
  }
  copies_ = 0;
  for (int e = 0; e < n_experts_; ++e) {
    copies_ += per_expert_[e];
    stats_.expert_tokens[e] += per_expert_[e];
  }
  if (token_choice_) {
    stats_.assignments_requested += tokens_ * top_k_;
    stats_.assignments_dropped += tokens_ * top_k_ - copies_;
  } else {
    stats_.assignments_requested += copies_;
  }
}

template <typename T>
T* MoeLayer<T>::staged_rows(DeviceBuffer<T>& buffer, int64_t copies) {
  return dispatcher_->group_size() > 1 ? ensure_size(buffer, size_t(copies) * d_model_) : nullptr;
}

template <typename T>
template <typename Work>
void MoeLayer<T>::timed_combine(Work&& work) {
  const double exchanged = dispatcher_->exchange_stats().time_s;
  combine_watch_.start();
  work();
  combine_watch_.stop();
  exchange_in_combine_s_ += dispatcher_->exchange_stats().time_s - exchanged;
}

template <typename T>
void MoeLayer<T>::forward(const T* x, T* y, const TokenBatch& batch) {
  FINEMOE_CHECK(store_.allocated(), "MoE layer used before its parameters were allocated");
  FINEMOE_CHECK(dispatcher_, "an expert-parallel MoE layer needs MoeComms::expert_group to run");
  tokens_ = batch.tokens();
  x_.keep_copy(x, size_t(tokens_) * d_model_);
  context_ = batch.context;
  ops::fill_zero(aux_sum_.data(), 1);
  MoeScratch<T>& scratch = *scratch_;
  const int d = d_model_;

  router_watch_.start();
  T* logits = ensure_size(logits_, size_t(tokens_) * n_experts_);
  T* probs = ensure_size(probs_, size_t(tokens_) * n_experts_);
  {
    cpu::FlopScope flops(cpu::FlopCategory::router);
    moe::router_forward(x, store_.operand(router_), tokens_, d, n_experts_, logits, probs);
  }
  loss_scale_ = batch.loss_scale;
  if (token_choice_ && z_weight_ > 0)  // its gradient is recomputed in backward
    moe::routing::router_z_loss(logits, probs, tokens_, n_experts_, z_weight_ * loss_scale_,
                                ensure_size(scratch.dlogits, size_t(tokens_) * n_experts_), aux_sum_.data());
  const T* group_probs = routing_group_probs(batch);
  shape_ = routing_shape(buffer_seqs_, my_first_seq_, batch.n_seq);
  // Loss-free balancing: select on probabilities + bias; the gates below stay the probabilities.
  const T* selection_scores = group_probs;
  if (bias_rate_ > 0) {
    const int64_t buffer_rows = int64_t(buffer_seqs_) * context_;
    T* scores = ensure_size(scratch.selection_scores, size_t(buffer_rows) * n_experts_);
    ops::add_selection_bias(scores, group_probs, store_.value(router_bias_), buffer_rows, n_experts_);
    selection_scores = scores;
  }
  const size_t max_copies = size_t(shape_.max_copies());
  int32_t* requested = balance_ ? ensure_size(requested_, size_t(shape_.slots()) * n_experts_) : nullptr;
  const size_t workspace = moe::routing::workspace_bytes(shape_);
  moe::routing::route_tokens(selection_scores, probs, shape_, ensure_size(copy_row_, max_copies),
                             ensure_size(copy_expert_, max_copies), ensure_size(copy_gate_, max_copies),
                             ensure_size(counts_device_, 2 * size_t(n_experts_)), requested,
                             ensure_size(routing_workspace_, workspace), workspace);
  if (balance_) {
    // Tokens of a slot that are this rank's: all of them, or its slice of a spanning group.
    const int local_per_slot = buffer_seqs_ == batch.n_seq ? group_size_ : batch.n_seq;
    moe::routing::balance_loss(group_probs, requested, shape_, aux_weight_ * batch.loss_scale, local_per_slot,
                               ensure_size(balance_grad_, size_t(shape_.slots()) * n_experts_), aux_sum_.data());
  }
  router_watch_.stop();
  count_copies();
  const int64_t received = dispatcher_->received_rows();
  T* x_expert = ensure_size(scratch.x_expert, size_t(received) * d);
  T* y_expert = y_expert_.forward_buffer(size_t(received) * d, scratch.y_expert_work);
  T* x_staged = staged_rows(scratch.x_staged, copies_);
  timed_combine([&] { moe::dispatch_to_experts(*dispatcher_, x, copy_row_.data(), d, x_staged, x_expert); });
  expert_watch_.start();
  experts_.forward(store_.operand(w1_), store_.operand(w2_), x_expert, dispatcher_->received_per_local_expert(),
                   y_expert, scratch.experts);
  expert_watch_.stop();

  T* combined = out_ln_ ? y_combined_.forward_buffer(size_t(tokens_) * d, scratch.y_combined_work) : y;
  T* y_staged = staged_rows(y_staged_, copies_);
  timed_combine([&] {
    ops::fill_zero(combined, tokens_ * d);
    moe::combine_from_experts(*dispatcher_, y_expert, copy_row_.data(), copy_gate_.data(), d, y_staged, combined);
  });
  y_expert_.keep();
  if (shared_) {  // every token, weight 1, before the output LayerNorm
    expert_watch_.start();
    cpu::FlopScope flops(cpu::FlopCategory::ffn);
    T* shared_out = ensure_size(scratch.shared_rows, size_t(tokens_) * d);
    shared_->forward(x, shared_out, batch);
    ops::add(combined, combined, shared_out, tokens_ * d);
    expert_watch_.stop();
  }
  if (out_ln_) {
    y_combined_.keep();
    out_ln_->forward(combined, y, tokens_);
  }
}

template <typename T>
void MoeLayer<T>::backward(const T* dy, T* dx) {
  const int d = d_model_;
  MoeScratch<T>& scratch = *scratch_;
  const T* dcombined = dy;
  if (out_ln_) {
    T* buf = ensure_size(scratch.dy_combined, size_t(tokens_) * d);
    ops::fill_zero(buf, tokens_ * d);
    out_ln_->backward(dy, buf, y_combined_.restore(scratch.y_combined_work));
    dcombined = buf;
  }
  const T* x = x_.restore(scratch.x_work);
  const int64_t received = dispatcher_->received_rows();
  T* dy_expert = ensure_size(scratch.dy_expert, size_t(received) * d);
  T* dx_expert = ensure_size(scratch.dx_expert, size_t(received) * d);
  T* dy_staged = staged_rows(scratch.dy_staged, copies_);
  T* dgate = ensure_size(scratch.dgate, size_t(copies_));
  timed_combine([&] {
    moe::combine_backward_to_experts(*dispatcher_, dcombined, y_expert_.restore(scratch.y_expert_work),
                                     y_staged_.data(), copy_row_.data(),
                                     copy_gate_.data(), d, dy_staged, dy_expert, dgate);
  });
  // The experts' input rows again, from the kept layer input (the forward's were scratch).
  T* x_expert = ensure_size(scratch.x_expert, size_t(received) * d);
  T* x_staged = staged_rows(scratch.x_staged, copies_);
  timed_combine([&] { moe::dispatch_to_experts(*dispatcher_, x, copy_row_.data(), d, x_staged, x_expert); });
  expert_watch_.start();
  experts_.backward(store_.operand(w1_), store_.operand(w2_), x_expert, dy_expert, dx_expert, store_.grad(w1_),
                    store_.grad(w2_), scratch.experts);
  expert_watch_.stop();
  T* dx_staged = staged_rows(scratch.dx_staged, copies_);
  timed_combine([&] {
    ops::fill_zero(dx, tokens_ * d);
    moe::scatter_add_from_experts(*dispatcher_, dx_expert, copy_row_.data(), d, dx_staged, dx);
  });
  if (shared_) {
    expert_watch_.start();
    cpu::FlopScope flops(cpu::FlopCategory::ffn);
    T* shared_dx = ensure_size(scratch.shared_rows, size_t(tokens_) * d);
    shared_->backward(dcombined, shared_dx);
    ops::add(dx, dx, shared_dx, tokens_ * d);
    expert_watch_.stop();
  }

  router_watch_.start();
  const size_t n_probs = size_t(tokens_) * n_experts_;
  T* dprobs = ensure_size(scratch.dprobs, n_probs);
  moe::routing::routing_backward<T>(dgate, copy_row_.data(), copy_expert_.data(), copies_,
                                    balance_ ? balance_grad_.data() : nullptr, shape_, dprobs);
  T* dlogits = ensure_size(scratch.dlogits, n_probs);
  if (token_choice_ && z_weight_ > 0) {  // sets dlogits to the z-loss gradient (its value is not needed)
    moe::routing::router_z_loss(logits_.data(), probs_.data(), tokens_, n_experts_, z_weight_ * loss_scale_, dlogits,
                                ensure_size(scratch.unused_sum, 1));
  } else {
    ops::fill_zero(dlogits, int64_t(n_probs));
  }
  {
    cpu::FlopScope flops(cpu::FlopCategory::router);
    moe::router_backward(x, store_.operand(router_), probs_.data(), dprobs, dlogits, tokens_, d, n_experts_, dx,
                         store_.grad(router_));
  }
  router_watch_.stop();
}

template <typename T>
std::unique_ptr<FeedForwardLayer<T>> make_moe_layer(const Config& cfg, int block, ParameterStore<T>& store,
                                                    const MoeComms& comms, int ep_rank, int ep_size,
                                                    std::shared_ptr<MoeScratch<T>> scratch) {
  return std::make_unique<MoeLayer<T>>(cfg, block, store, comms, ep_rank, ep_size, std::move(scratch));
}

template class MoeLayer<float>;
template class MoeLayer<double>;
template std::unique_ptr<FeedForwardLayer<float>> make_moe_layer<float>(const Config&, int, ParameterStore<float>&,
                                                                        const MoeComms&, int, int,
                                                                        std::shared_ptr<MoeScratch<float>>);
template std::unique_ptr<FeedForwardLayer<double>> make_moe_layer<double>(const Config&, int,
                                                                          ParameterStore<double>&,
                                                                          const MoeComms&, int, int,
                                                                          std::shared_ptr<MoeScratch<double>>);

}  // namespace finemoe
