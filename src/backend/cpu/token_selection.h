#pragma once
// Token selection ("routing" proper): which (token, expert) pairs of a routing group are
// processed. A routing group is `group_size` tokens at the same position of `group_size`
// consecutive global sequences; selection depends only on the group's router probabilities,
// never on how the group is spread over ranks.
#include <memory>
#include <string>
#include <vector>

namespace finemoe::moe {

// The tokens of one routing group, in global token order: token i's router probabilities
// (n_experts values) start at probs + i * stride.
template <typename T>
struct TokenGroup {
  const T* probs = nullptr;
  int64_t stride = 0;
  int size = 0;
};

// One kept pair; token indexes the group.
struct ExpertAssignment {
  int token = 0;
  int expert = 0;
};

template <typename T>
class TokenSelector {
 public:
  virtual ~TokenSelector() = default;
  // Appends the group's kept pairs to `kept`. requested (resized to n_experts) receives the
  // pairs asked of each expert before capacity is applied.
  virtual void select(const TokenGroup<T>& group, std::vector<ExpertAssignment>& kept,
                      std::vector<int>& requested) = 0;
  // Most tokens an expert takes from a group of group_tokens tokens.
  virtual int capacity(int group_tokens) const = 0;
};

// Expert choice (Zhou et al. 2022; the paper's routing): expert e takes the `capacity` tokens with
// the highest probability p[i][e], capacity = ceil(group_tokens * G / n_experts * capacity_factor),
// ties broken by the lowest token index. requested[e] = capacity.
template <typename T>
class ExpertChoiceSelector final : public TokenSelector<T> {
 public:
  ExpertChoiceSelector(int n_experts, int granularity, double capacity_factor);
  void select(const TokenGroup<T>& group, std::vector<ExpertAssignment>& kept,
              std::vector<int>& requested) override;
  int capacity(int group_tokens) const override;

 private:
  int n_experts_;
  int granularity_;
  double capacity_factor_;
  std::vector<int> order_;
};

// Token choice (Switch / GShard / Mixtral): token i asks for its top_k experts by probability
// (ties: lowest expert index); expert e keeps the first `capacity` requests in token order
// (earlier tokens first, never by score), capacity = ceil(capacity_factor * group_tokens * top_k /
// n_experts); capacity_factor 0 = dropless.
template <typename T>
class TokenChoiceSelector final : public TokenSelector<T> {
 public:
  TokenChoiceSelector(int n_experts, int top_k, double capacity_factor);
  void select(const TokenGroup<T>& group, std::vector<ExpertAssignment>& kept,
              std::vector<int>& requested) override;
  int capacity(int group_tokens) const override;

 private:
  int n_experts_;
  int top_k_;
  double capacity_factor_;
  std::vector<int> order_;
  std::vector<int> load_;
};

// routing: "expert_choice" | "token_choice".
template <typename T>
std::unique_ptr<TokenSelector<T>> make_token_selector(const std::string& routing, int n_experts,
                                                      int granularity, int top_k, double capacity_factor);

}  // namespace finemoe::moe
