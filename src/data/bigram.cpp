#include "data/bigram.h"

#include <cmath>
#include <sstream>

#include "util/check.h"

namespace finemoe {

BigramModel::BigramModel(int vocab, double k)
    : vocab_(vocab), k_(k), counts_(std::size_t(vocab) * std::size_t(vocab), 0), context_(std::size_t(vocab), 0) {
  if (!(k > 0.0) || !std::isfinite(k)) {
    std::ostringstream os;
    os << "smoothing constant k = " << k << " is out of range (allowed: k > 0)";
    throw InputError(os.str());
  }
  FINEMOE_CHECK(vocab > 0, "vocab " << vocab);
}

void BigramModel::add_pair(int previous, int next) {
  FINEMOE_CHECK(previous >= 0 && previous < vocab_ && next >= 0 && next < vocab_,
                "pair (" << previous << ", " << next << ") for vocab " << vocab_);
  ++counts_[std::size_t(previous) * std::size_t(vocab_) + std::size_t(next)];
  ++context_[std::size_t(previous)];
  ++pairs_;
}

void BigramModel::fit(const TokenDataset& data) {
  FINEMOE_CHECK(data.vocab() <= vocab_, "dataset vocab " << data.vocab() << " > model vocab " << vocab_);
  // Walk the shards directly (the stream continues across shard boundaries).
  int previous = -1;
  for (const Shard& shard : data.shards()) {
    const uint16_t* t = shard.tokens();
    for (std::size_t i = 0; i < shard.size(); ++i) {
      if (previous >= 0) add_pair(previous, t[i]);
      previous = t[i];
    }
  }
}

double BigramModel::probability(int previous, int next) const {
  const double pair = double(counts_[std::size_t(previous) * std::size_t(vocab_) + std::size_t(next)]);
  return (pair + k_) / (double(context_[std::size_t(previous)]) + k_ * vocab_);
}

double BigramModel::cross_entropy(const TokenDataset& data) const {
  FINEMOE_CHECK(data.vocab() <= vocab_, "dataset vocab " << data.vocab() << " > model vocab " << vocab_);
  if (data.size() < 2) throw InputError(data.what() + ": '" + data.spec() + "' holds fewer than 2 tokens, no pair to score");
  double sum = 0.0;
  int previous = -1;
  for (const Shard& shard : data.shards()) {
    const uint16_t* t = shard.tokens();
    for (std::size_t i = 0; i < shard.size(); ++i) {
      if (previous >= 0) sum -= std::log(probability(previous, t[i]));
      previous = t[i];
    }
  }
  return sum / double(data.size() - 1);
}

}  // namespace finemoe
