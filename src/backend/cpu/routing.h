#pragma once
// MoE routing over a layer's routing buffer, as whole-buffer operations: the CPU references of
// the device kernels in kernels/moe_routing.h. A routing buffer holds `groups` routing groups of
// `group_size` consecutive sequences; the group's tokens at position p are its sequences' tokens at
// p (row seq * context + p of the buffer). Selection per (group, position) is the TokenSelector's
// (token_selection.h), so decisions and ties are exactly those of the per-group reference.
#include <cstdint>

namespace finemoe::cpu {

struct RoutingShape {
  int groups = 0;           // routing groups in the buffer
  int group_size = 0;       // sequences per group
  int context = 0;          // positions per sequence
  int n_experts = 0;
  int granularity = 1;      // expert choice: capacity = ceil(group_size * G / n_experts * factor); G here is
                            // the routed granularity G - moe.shared_experts
  int top_k = 1;            // token choice
  double capacity_factor = 1;
  bool token_choice = false;
  int first_local_seq = 0;  // this rank's sequences: [first_local_seq, first_local_seq + local_seqs)
  int local_seqs = 0;

  int64_t slots() const { return int64_t(groups) * context; }  // (group, position) pairs
  // Most tokens an expert keeps from one (group, position).
  int capacity() const;
  // Most copies of this rank's tokens that selection can keep (the size of the copy arrays).
  int64_t max_copies() const;
  // Whether the per-expert counts are known without looking at the probabilities: expert choice
  // with every group inside this rank (each expert keeps `capacity` tokens of every slot).
  bool static_counts() const;
};

// Selection and a stable counting sort into send order (expert, then (group, position), then the
// selector's order within it), keeping only this rank's tokens. group_probs: [groups * group_size
// * context, n_experts] (the routing buffer); local_probs: this rank's [local_seqs * context,
// n_experts] (gates are read from it). Writes the first sum(per_expert) entries of copy_row (row in
// this rank's batch), copy_expert and copy_gate, and per_expert[n_experts]. requested, when not
// null: [slots, n_experts] pairs asked of each expert before capacity (the balance loss's f).
template <typename T>
void route_tokens(const T* group_probs, const T* local_probs, const RoutingShape& s, int32_t* copy_row,
                  int32_t* copy_expert, T* copy_gate, int64_t* per_expert, int32_t* requested);

// The Switch balance loss of every slot (token choice): with f_e = requested_e / (group_size *
// top_k) and P_e the slot's mean probability, *loss_sum += coef * local_tokens_per_slot *
// n_experts * sum_e f_e P_e (slots in order) and grad[slot, e] = coef * n_experts * f_e.
template <typename T>
void balance_loss(const T* group_probs, const int32_t* requested, const RoutingShape& s, double coef,
                  int local_tokens_per_slot, T* grad, double* loss_sum);

// Router z-loss: *loss_sum += scale * sum_t lse(logits_t)^2; SETS dlogits = scale * 2 lse_t p_t.
template <typename T>
void router_z_loss(const T* logits, const T* probs, int64_t rows, int n_experts, double scale, T* dlogits,
                   double* loss_sum);

// dprobs = 0, then dprobs[copy_row[c], copy_expert[c]] = dgate[c] (a (row, expert) pair is kept
// at most once), then every local token adds its slot's balance gradient when balance_grad is set.
template <typename T>
void routing_backward(const T* dgate, const int32_t* copy_row, const int32_t* copy_expert, int64_t copies,
                      const T* balance_grad, const RoutingShape& s, T* dprobs);

// Softmax backward, accumulated: dlogits[t] += p_t * (dprobs_t - <p_t, dprobs_t>).
template <typename T>
void softmax_backward_accumulate(const T* probs, const T* dprobs, T* dlogits, int64_t rows, int n);

}  // namespace finemoe::cpu
