#pragma once
// Count-based bigram model with add-k smoothing: the baseline a trained model must beat.
//   P(b | a) = (c(a, b) + k) / (c(a) + k V),  c(a) = sum_b c(a, b),
// fitted on the consecutive token pairs of a stream.
#include <cstdint>
#include <vector>

#include "data/token_dataset.h"

namespace finemoe {

class BigramModel {
 public:
  BigramModel(int vocab, double k);

  // Adds the pairs (t[i], t[i + 1]) of the dataset's stream.
  void fit(const TokenDataset& data);
  void add_pair(int previous, int next);

  double probability(int previous, int next) const;
  // Mean of -ln P(t[i + 1] | t[i]) over the pairs of the dataset's stream, in nats per token.
  double cross_entropy(const TokenDataset& data) const;

  int vocab() const { return vocab_; }
  double k() const { return k_; }
  uint64_t pairs() const { return pairs_; }

 private:
  int vocab_;
  double k_;
  std::vector<uint64_t> counts_;   // [previous][next]
  std::vector<uint64_t> context_;  // [previous]
  uint64_t pairs_ = 0;
};

}  // namespace finemoe
