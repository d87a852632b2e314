#pragma once
// The MoE feed-forward layer: router -> token selection -> dispatch -> experts -> combine
// (-> output LayerNorm), expert-parallel over an MPI group. See docs/moe.md for the routing
// definitions, the objective with its auxiliary losses and why results do not depend on the
// rank layout.
//
// Objective contributed by one layer (token choice; expert choice has no auxiliary loss):
//   J = sum_t loss_scale * <dL/dy_t, y_t>  (the main loss, through y)
//     + aux_loss_weight * loss_scale * sum_{groups g} |g| * n_experts * sum_e f_{g,e} P_{g,e}
//     + z_loss_weight   * loss_scale * sum_t logsumexp(logits_t)^2
// where a group g is the |g| = group_size tokens at one position of group_size consecutive global
// sequences, f_{g,e} = (top-k requests of expert e in g, before capacity drops) / (|g| k) and
// P_{g,e} = mean over g of p_{t,e}. Since loss_scale = 1 / (tokens in the optimizer step), the
// balance term is the mean of the per-group Switch loss over all groups of the step and the
// z-loss term the mean over all tokens; summing over ranks and micro-batches gives exactly these
// means (TokenBatch::micro_batches is not needed). A group spanning ranks contributes its loss in
// proportion to each rank's share of its tokens, and each rank's backward covers its own tokens.
#include <memory>
#include <vector>

#include "backend/compute.h"
#include "backend/ops.h"
#include "config/config.h"
#include "model/feed_forward.h"
#include "model/layer_norm.h"
#include "model/moe/dispatcher.h"
#include "model/moe/experts.h"
#include "backend/cpu/token_selection.h"
#include "model/parameters.h"

namespace finemoe {

template <typename T>
class MoeLayer final : public FeedForwardLayer<T> {
 public:
  // Registers blocks.{block}.moe.router [d_model, n_experts] (replicated),
  // blocks.{block}.moe.experts.w1 [n_local, d_model, d_expert] and .w2 [n_local, d_expert, d_model]
  // (experts ep_rank * n_local onwards) and, with moe.output_layernorm, blocks.{block}.moe.out_ln.
  // comms.expert_group must have ep_size ranks; it may be null with ep_size > 1 only to register
  // parameters (dry run): forward then fails.
  MoeLayer(const Config& cfg, int block, ParameterStore<T>& store, const MoeComms& comms, int ep_rank,
           int ep_size);

  // x is copied for backward (callers reuse their buffers). Collective over comms.expert_group and,
  // when a routing group spans ranks, comms.routing_group.
  void forward(const T* x, T* y, const TokenBatch& batch) override;
  void backward(const T* dy, T* dx) override;
  double aux_loss() const override { return aux_loss_; }
  const FeedForwardStats& stats() const override { return stats_; }
  void reset_stats() override;

  // The token copies of the last forward in send order (global expert order): local token row,
  // global expert and routing weight of each.
  const Buffer<int32_t>& copy_rows() const { return copy_row_; }
  const std::vector<int32_t>& copy_experts() const { return copy_expert_; }
  const Buffer<T>& copy_gates() const { return copy_gate_; }
  // Most tokens an expert takes from one routing group.
  int capacity() const { return selector_->capacity(group_size_); }

 private:
  // Router probabilities of this rank's routing groups: local, or all-gathered when a group
  // spans ranks. Returns the buffer; sets buffer_seqs_ and my_first_seq_.
  const T* routing_group_probs(const TokenBatch& batch);
  // Selection over every group; fills the copies (unsorted) and the balance-loss terms.
  void select_tokens(const T* group_probs, const TokenBatch& batch);
  // Counting sort of the copies into send order.
  void sort_copies();
  // A send-order buffer for the copies that travel to or from other ranks; null at one rank.
  T* staged_rows(Buffer<T>& buffer, int64_t copies);
  // Runs permute / combine work, charging it to combine time less the exchanges inside it.
  template <typename Work>
  void timed_combine(Work&& work);

  int d_model_, n_experts_, n_local_, group_size_, top_k_;
  bool token_choice_;
  double aux_weight_, z_weight_;
  ParameterStore<T>& store_;
  ParamHandle router_, w1_, w2_;
  std::unique_ptr<LayerNorm<T>> out_ln_;
  MoeComms comms_;
  std::unique_ptr<moe::TokenSelector<T>> selector_;
  std::unique_ptr<moe::TokenDispatcher<T>> dispatcher_;
  moe::GroupedExperts<T> experts_;

  // State of the last forward.
  Buffer<T> x_;  // the layer input, for the router gradient
  int64_t tokens_ = 0;
  int context_ = 0;
  int buffer_seqs_ = 0;     // sequences in the routing buffer (whole groups)
  int my_first_seq_ = 0;    // this rank's first sequence within the routing buffer
  double aux_loss_ = 0;
  bool has_z_grad_ = false;
  Buffer<T> logits_, probs_, gathered_probs_;
  std::vector<moe::ExpertAssignment> kept_;
  std::vector<int> requested_;
  std::vector<int32_t> unsorted_row_, unsorted_expert_;
  Buffer<int32_t> copy_row_;
  std::vector<int32_t> copy_expert_;
  Buffer<T> copy_gate_;
  std::vector<int64_t> per_expert_, expert_offset_;
  Buffer<T> balance_grad_;  // [group in buffer][position][expert]: d balance term / d p
  // Expert order (x_expert_, y_expert_) and the staged send-order rows (x_staged_, y_staged_).
  Buffer<T> x_staged_, x_expert_, y_expert_, y_staged_, y_combined_;
  // Backward buffers.
  Buffer<T> dy_combined_, dy_staged_, dy_expert_, dx_expert_, dx_staged_, dgate_, dprobs_, dlogits_;
  FeedForwardStats stats_;
  ops::Stopwatch router_watch_, expert_watch_, combine_watch_;
};

template <typename T>
std::unique_ptr<FeedForwardLayer<T>> make_moe_layer(const Config& cfg, int block, ParameterStore<T>& store,
                                                    const MoeComms& comms, int ep_rank, int ep_size);

}  // namespace finemoe
