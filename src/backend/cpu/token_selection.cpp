#include "backend/cpu/token_selection.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "util/check.h"

namespace finemoe::moe {
namespace {

// ceil(x) that ignores the rounding error of the floating-point product (5.0000000001 -> 5).
// ceil(x) within [1, upper], clamped before the cast (a huge or infinite x has no int value).
int ceil_count(double x, int upper) {
  return static_cast<int>(std::clamp(std::ceil(x - 1e-9), 1.0, double(std::max(upper, 1))));
}

}  // namespace

template <typename T>
ExpertChoiceSelector<T>::ExpertChoiceSelector(int n_experts, int granularity, double capacity_factor)
    : n_experts_(n_experts), granularity_(granularity), capacity_factor_(capacity_factor) {
  FINEMOE_CHECK(capacity_factor > 0, "expert choice needs capacity_factor > 0, got " << capacity_factor);
}

template <typename T>
int ExpertChoiceSelector<T>::capacity(int group_tokens) const {
  return ceil_count(double(group_tokens) * granularity_ / n_experts_ * capacity_factor_, group_tokens);
}

template <typename T>
void ExpertChoiceSelector<T>::select(const TokenGroup<T>& group, std::vector<ExpertAssignment>& kept,
                                     std::vector<int>& requested) {
  const int cap = capacity(group.size);
  requested.assign(n_experts_, cap);
  order_.resize(group.size);
  for (int e = 0; e < n_experts_; ++e) {
    std::iota(order_.begin(), order_.end(), 0);
    auto higher = [&](int a, int b) {
      const T pa = group.probs[a * group.stride + e], pb = group.probs[b * group.stride + e];
      return pa > pb || (pa == pb && a < b);
    };
    std::partial_sort(order_.begin(), order_.begin() + cap, order_.end(), higher);
    for (int j = 0; j < cap; ++j) kept.push_back({order_[j], e});
  }
}

template <typename T>
TokenChoiceSelector<T>::TokenChoiceSelector(int n_experts, int top_k, double capacity_factor)
    : n_experts_(n_experts), top_k_(top_k), capacity_factor_(capacity_factor) {
  FINEMOE_CHECK(top_k >= 1 && top_k <= n_experts, "top_k " << top_k << " not in [1, " << n_experts << "]");
  FINEMOE_CHECK(capacity_factor >= 0, "capacity_factor " << capacity_factor << " < 0");
}

template <typename T>
int TokenChoiceSelector<T>::capacity(int group_tokens) const {
  if (capacity_factor_ == 0) return group_tokens;  // dropless: a token asks an expert at most once
  return ceil_count(capacity_factor_ * group_tokens * top_k_ / n_experts_, group_tokens);
}

template <typename T>
void TokenChoiceSelector<T>::select(const TokenGroup<T>& group, std::vector<ExpertAssignment>& kept,
                                    std::vector<int>& requested) {
  const int cap = capacity(group.size);
  requested.assign(n_experts_, 0);
  load_.assign(n_experts_, 0);
  order_.resize(n_experts_);
  for (int i = 0; i < group.size; ++i) {  // token order: earlier tokens claim capacity first
    const T* p = group.probs + i * group.stride;
    std::iota(order_.begin(), order_.end(), 0);
    std::partial_sort(order_.begin(), order_.begin() + top_k_, order_.end(),
                      [p](int a, int b) { return p[a] > p[b] || (p[a] == p[b] && a < b); });
    for (int j = 0; j < top_k_; ++j) {
      const int e = order_[j];
      ++requested[e];
      if (load_[e] < cap) {
        ++load_[e];
        kept.push_back({i, e});
      }
    }
  }
}

template <typename T>
std::unique_ptr<TokenSelector<T>> make_token_selector(const std::string& routing, int n_experts,
                                                      int granularity, int top_k, double capacity_factor) {
  if (routing == "expert_choice")
    return std::make_unique<ExpertChoiceSelector<T>>(n_experts, granularity, capacity_factor);
  if (routing == "token_choice")
    return std::make_unique<TokenChoiceSelector<T>>(n_experts, top_k, capacity_factor);
  throw InputError("moe.routing = '" + routing + "': expected expert_choice or token_choice");
}

template class ExpertChoiceSelector<float>;
template class ExpertChoiceSelector<double>;
template class TokenChoiceSelector<float>;
template class TokenChoiceSelector<double>;
template std::unique_ptr<TokenSelector<float>> make_token_selector<float>(const std::string&, int, int, int,
                                                                          double);
template std::unique_ptr<TokenSelector<double>> make_token_selector<double>(const std::string&, int, int, int,
                                                                            double);

}  // namespace finemoe::moe
