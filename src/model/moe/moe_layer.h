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
#include "backend/kept_activation.h"
#include "backend/ops.h"
#include "config/config.h"
#include "model/dense_ffn.h"
#include "model/feed_forward.h"
#include "model/layer_norm.h"
#include "model/moe/dispatcher.h"
#include "model/moe/experts.h"
#include "model/moe/routing_ops.h"
#include "model/parameters.h"

namespace finemoe {

// What an MoE layer needs only during its own forward or backward, shared by a model's MoE layers
// (one runs at a time): expert-order rows of the forward's input (re-gathered in the backward
// rather than kept), the staged send rows, the experts' scratch and every backward buffer.
template <typename T>
struct MoeScratch {
  DeviceBuffer<T> x_staged, x_expert;
  moe::ExpertScratch<T> experts;
  DeviceBuffer<T> dy_combined, dy_staged, dy_expert, dx_expert, dx_staged, dgate, dprobs, dlogits;
  DeviceBuffer<double> unused_sum;  // [1]: the z-loss recomputed in backward adds its value here
  DeviceBuffer<T> shared_rows;      // [tokens, d_model]: the shared experts' output, then their dx
  std::shared_ptr<DenseFfnScratch<T>> shared_experts = std::make_shared<DenseFfnScratch<T>>();
  DeviceBuffer<T> selection_scores;  // [routing buffer rows, n_experts]: probabilities + bias (moe.balance = bias)
  DeviceBuffer<T> bias_delta;        // [n_experts]: the bias step, copied from the host
  // bf16 activation storage: fp32 working copies of the kept tensors (backend/kept_activation.h).
  DeviceBuffer<T> x_work, y_expert_work, y_combined_work;
};

template <typename T>
class MoeLayer final : public FeedForwardLayer<T> {
 public:
  // Registers blocks.{block}.moe.router [d_model, n_experts] (replicated),
  // blocks.{block}.moe.experts.w1 [n_local, d_model, d_expert] and .w2 [n_local, d_expert, d_model]
  // (experts ep_rank * n_local onwards; swiglu: w1 [n_local, d_model, 2 d_expert]), with
  // moe.shared_experts = S > 0 blocks.{block}.moe.shared.w1 [d_model, S d_expert (x2 swiglu)] and .w2
  // [S d_expert, d_model] (replicated: every rank computes them on its own tokens) and, with
  // moe.output_layernorm, blocks.{block}.moe.out_ln; with moe.balance = bias
  // blocks.{block}.moe.router_bias [n_experts] (replicated, zero-initialised, never given a gradient
  // nor decayed, so AdamW leaves it exactly as it is; moved only by update_routing_bias; kept in
  // checkpoints like every tensor).
  // comms.expert_group must have ep_size ranks; it may be null with ep_size > 1 only to register
  // parameters (dry run): forward then fails.
  // scratch: shared with the model's other MoE layers; null gives the layer its own.
  MoeLayer(const Config& cfg, int block, ParameterStore<T>& store, const MoeComms& comms, int ep_rank,
           int ep_size, std::shared_ptr<MoeScratch<T>> scratch = nullptr);

  // x is copied for backward (callers reuse their buffers). Collective over comms.expert_group and,
  // when a routing group spans ranks, comms.routing_group. The host waits for the device at most
  // once: for the per-expert counts, unless they are static (expert choice, groups inside the rank).
  void forward(const T* x, T* y, const TokenBatch& batch) override;
  void backward(const T* dy, T* dx) override;
  const double* aux_loss_sum() const override { return aux_sum_.data(); }
  // The same, read on the host (one wait; for tests).
  double aux_loss() const {
    double v = 0;
    copy_to_host(&v, aux_sum_.data(), 1);
    return v;
  }
  const FeedForwardStats& stats() override;
  void reset_stats() override;
  // Tokens per global expert routed from this rank since reset_stats() (host; no wait).
  const std::vector<int64_t>& routed_tokens() const { return stats_.expert_tokens; }
  // moe.balance = bias, after an optimizer step: router_bias += bias_rate * sign(mean - load) with
  // `world_load` [n_experts] summed over the world and the step (the same on every rank, so the
  // bias stays identical). One transfer to the device, no wait.
  void update_routing_bias(const int64_t* world_load);
  bool has_routing_bias() const { return bias_rate_ > 0; }

  // The token copies of the last forward in send order (global expert order): local token row,
  // global expert and routing weight of each, read to the host (one transfer each; for tests).
  std::vector<int32_t> copy_rows() const { return first_copies(copy_row_); }
  std::vector<int32_t> copy_experts() const { return first_copies(copy_expert_); }
  std::vector<T> copy_gates() const { return first_copies(copy_gate_); }
  int64_t copies() const { return copies_; }
  // Most tokens an expert takes from one routing group.
  int capacity() const { return routing_shape(group_size_, 0, group_size_).capacity(); }

 private:
  // Router probabilities of this rank's routing groups: local, or all-gathered when a group
  // spans ranks. Returns the buffer; sets buffer_seqs_ and my_first_seq_.
  const T* routing_group_probs(const TokenBatch& batch);
  // The selection's shapes for a routing buffer of `buffer_seqs` sequences holding this rank's
  // `local_seqs` from `first_local_seq` on.
  moe::routing::RoutingShape routing_shape(int buffer_seqs, int first_local_seq, int local_seqs) const;
  // Copies per global expert on the host (static, or the forward's one transfer, after the count
  // exchange where the expert group takes compute memory) and the dispatcher's plan.
  void count_copies();
  // A send-order buffer for the copies that travel to or from other ranks; null at one rank.
  T* staged_rows(DeviceBuffer<T>& buffer, int64_t copies);
  template <typename U>
  std::vector<U> first_copies(const DeviceBuffer<U>& b) const {
    std::vector<U> host(static_cast<size_t>(copies_));
    copy_to_host(host.data(), b.data(), host.size());
    return host;
  }
  // Runs permute / combine work, charging it to combine time less the exchanges inside it.
  template <typename Work>
  void timed_combine(Work&& work);

  int d_model_, n_experts_, n_local_, granularity_, group_size_, top_k_;
  double capacity_factor_;
  bool token_choice_;
  double aux_weight_, z_weight_;
  ParameterStore<T>& store_;
  ParamHandle router_, w1_, w2_, router_bias_;
  double bias_rate_ = 0;  // > 0: moe.balance = bias
  std::unique_ptr<DenseFeedForward<T>> shared_;  // the S shared experts as one FFN of width S d_expert
  std::unique_ptr<LayerNorm<T>> out_ln_;
  MoeComms comms_;
  std::unique_ptr<moe::TokenDispatcher<T>> dispatcher_;
  moe::GroupedExperts<T> experts_;

  // State of the last forward.
  KeptActivation<T> x_;  // the layer input, for the router gradient and the re-gather
  int64_t tokens_ = 0;
  int context_ = 0;
  double loss_scale_ = 0;
  int buffer_seqs_ = 0;     // sequences in the routing buffer (whole groups)
  int my_first_seq_ = 0;    // this rank's first sequence within the routing buffer
  moe::routing::RoutingShape shape_;
  bool balance_ = false;    // token choice with a balance loss
  DeviceBuffer<double> aux_sum_;  // [1]: weighted auxiliary losses of the last forward
  DeviceBuffer<T> logits_, probs_, gathered_probs_;
  DeviceBuffer<uint8_t> routing_workspace_;
  DeviceBuffer<int32_t> requested_;  // [slot][expert], token choice with a balance loss
  DeviceBuffer<int32_t> copy_row_, copy_expert_;
  DeviceBuffer<T> copy_gate_;
  DeviceBuffer<int64_t> counts_device_;  // [sent per expert | received per (source, local expert)]
  std::vector<int64_t> per_expert_;  // host copy (or the static counts)
  int64_t copies_ = 0;
  DeviceBuffer<T> balance_grad_;  // [slot][expert]: d balance term / d p
  // Kept for backward: the experts' output in expert order, the rows other ranks sent back
  // (staged, send order) and the combined output (the output LayerNorm's input).
  KeptActivation<T> y_expert_, y_combined_;
  DeviceBuffer<T> y_staged_;
  std::shared_ptr<MoeScratch<T>> scratch_;
  FeedForwardStats stats_;
  double exchange_in_combine_s_ = 0;  // host-timed exchanges inside the combine stopwatch
  ops::Stopwatch router_watch_, expert_watch_, combine_watch_;
};

template <typename T>
std::unique_ptr<FeedForwardLayer<T>> make_moe_layer(const Config& cfg, int block, ParameterStore<T>& store,
                                                    const MoeComms& comms, int ep_rank, int ep_size,
                                                    std::shared_ptr<MoeScratch<T>> scratch = nullptr);

}  // namespace finemoe
