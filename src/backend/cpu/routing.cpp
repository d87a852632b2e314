#include "backend/cpu/routing.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <vector>

#include "backend/cpu/token_selection.h"

namespace finemoe::cpu {
namespace {

template <typename T>
std::unique_ptr<moe::TokenSelector<T>> selector_for(const RoutingShape& s) {
  return moe::make_token_selector<T>(s.token_choice ? "token_choice" : "expert_choice", s.n_experts,
                                     s.granularity, s.top_k, s.capacity_factor);
}

// The probabilities of slot (g, p): its group_size tokens, one sequence (context rows) apart.
template <typename T>
moe::TokenGroup<T> slot_tokens(const T* group_probs, const RoutingShape& s, int g, int p) {
  return {group_probs + (int64_t(g) * s.group_size * s.context + p) * s.n_experts,
          int64_t(s.context) * s.n_experts, s.group_size};
}

}  // namespace

int RoutingShape::capacity() const { return selector_for<double>(*this)->capacity(group_size); }

int64_t RoutingShape::max_copies() const {
  const int64_t local_tokens = int64_t(local_seqs) * context;
  if (token_choice) return local_tokens * top_k;
  // Expert choice: every expert keeps `capacity` tokens per slot, at most all of this rank's ones.
  return std::min<int64_t>(slots() * n_experts * capacity(), local_tokens * n_experts);
}

bool RoutingShape::static_counts() const {
  return !token_choice && first_local_seq == 0 && local_seqs == groups * group_size;
}

template <typename T>
void route_tokens(const T* group_probs, const T* local_probs, const RoutingShape& s, int32_t* copy_row,
                  int32_t* copy_expert, T* copy_gate, int64_t* per_expert, int32_t* requested) {
  const auto selector = selector_for<T>(s);
  const int E = s.n_experts;
  std::vector<moe::ExpertAssignment> kept;
  std::vector<int> asked;
  std::vector<int32_t> rows, experts;  // this rank's copies in selection order
  for (int g = 0; g < s.groups; ++g)
    for (int p = 0; p < s.context; ++p) {
      kept.clear();
      selector->select(slot_tokens(group_probs, s, g, p), kept, asked);
      if (requested) std::copy(asked.begin(), asked.end(), requested + (int64_t(g) * s.context + p) * E);
      for (const moe::ExpertAssignment& a : kept) {
        const int seq = g * s.group_size + a.token - s.first_local_seq;
        if (seq < 0 || seq >= s.local_seqs) continue;
        rows.push_back(seq * s.context + p);
        experts.push_back(a.expert);
      }
    }
  std::vector<int64_t> next(size_t(E) + 1, 0);
  std::fill(per_expert, per_expert + E, 0);
  for (int32_t e : experts) ++per_expert[e];
  for (int e = 0; e < E; ++e) next[size_t(e) + 1] = next[size_t(e)] + per_expert[e];
  for (size_t c = 0; c < rows.size(); ++c) {  // stable: selection order within each expert
    const int e = experts[c];
    const int64_t at = next[size_t(e)]++;
    copy_row[at] = rows[c];
    copy_expert[at] = e;
    copy_gate[at] = local_probs[int64_t(rows[c]) * E + e];
  }
}

template <typename T>
void balance_loss(const T* group_probs, const int32_t* requested, const RoutingShape& s, double coef,
                  int local_tokens_per_slot, T* grad, double* loss_sum) {
  const int E = s.n_experts, gs = s.group_size;
  for (int g = 0; g < s.groups; ++g)
    for (int p = 0; p < s.context; ++p) {
      const int64_t slot = int64_t(g) * s.context + p;
      const moe::TokenGroup<T> tokens = slot_tokens(group_probs, s, g, p);
      double loss = 0;
      for (int e = 0; e < E; ++e) {
        const double f = double(requested[slot * E + e]) / (double(gs) * s.top_k);
        double mean_p = 0;
        for (int i = 0; i < gs; ++i) mean_p += tokens.probs[i * tokens.stride + e];
        mean_p /= gs;
        loss += E * f * mean_p;
        grad[slot * E + e] = static_cast<T>(coef * E * f);
      }
      *loss_sum += coef * local_tokens_per_slot * loss;
    }
}

template <typename T>
void router_z_loss(const T* logits, const T* probs, int64_t rows, int n_experts, double scale, T* dlogits,
                   double* loss_sum) {
  double total = 0;
#pragma omp parallel for schedule(static) reduction(+ : total)
  for (int64_t t = 0; t < rows; ++t) {
    const T* l = logits + t * n_experts;
    const T m = *std::max_element(l, l + n_experts);
    T sum = 0;
    for (int e = 0; e < n_experts; ++e) sum += std::exp(l[e] - m);
    const T lse = m + std::log(sum);
    total += double(lse) * double(lse);
    const T c = static_cast<T>(2 * scale) * lse;
    for (int e = 0; e < n_experts; ++e) dlogits[t * n_experts + e] = c * probs[t * n_experts + e];
  }
  *loss_sum += scale * total;
}

template <typename T>
void routing_backward(const T* dgate, const int32_t* copy_row, const int32_t* copy_expert, int64_t copies,
                      const T* balance_grad, const RoutingShape& s, T* dprobs) {
  const int E = s.n_experts;
  const int64_t tokens = int64_t(s.local_seqs) * s.context;
  std::fill(dprobs, dprobs + tokens * E, T(0));
  for (int64_t c = 0; c < copies; ++c) dprobs[int64_t(copy_row[c]) * E + copy_expert[c]] += dgate[c];
  if (!balance_grad) return;
  for (int64_t t = 0; t < tokens; ++t) {  // every token gets its slot's d balance / d p
    const int64_t seq = s.first_local_seq + t / s.context, pos = t % s.context;
    const T* grad = balance_grad + ((seq / s.group_size) * s.context + pos) * E;
    for (int e = 0; e < E; ++e) dprobs[t * E + e] += grad[e];
  }
}

template <typename T>
void softmax_backward_accumulate(const T* probs, const T* dprobs, T* dlogits, int64_t rows, int n) {
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < rows; ++t) {
    const T* p = probs + t * n;
    const T* dp = dprobs + t * n;
    T* dl = dlogits + t * n;
    T dot = 0;
    for (int e = 0; e < n; ++e) dot += p[e] * dp[e];
    for (int e = 0; e < n; ++e) dl[e] += p[e] * (dp[e] - dot);
  }
}

#define FINEMOE_ROUTING(T)                                                                                     \
  template void route_tokens<T>(const T*, const T*, const RoutingShape&, int32_t*, int32_t*, T*, int64_t*,    \
                                int32_t*);                                                                   \
  template void balance_loss<T>(const T*, const int32_t*, const RoutingShape&, double, int, T*, double*);     \
  template void router_z_loss<T>(const T*, const T*, int64_t, int, double, T*, double*);                      \
  template void routing_backward<T>(const T*, const int32_t*, const int32_t*, int64_t, const T*,              \
                                    const RoutingShape&, T*);                                                 \
  template void softmax_backward_accumulate<T>(const T*, const T*, T*, int64_t, int);
FINEMOE_ROUTING(float)
FINEMOE_ROUTING(double)
#undef FINEMOE_ROUTING

}  // namespace finemoe::cpu
