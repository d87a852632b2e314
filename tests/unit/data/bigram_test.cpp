#include "data/bigram.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "data_test_util.h"

namespace finemoe {
namespace {

using testing::ScratchDir;

void write(const std::string& path, const std::vector<uint16_t>& tokens) {
  write_shard(path, tokens.data(), tokens.size());
}

// Train stream 0 1 0 | 1 1 (two shards; the pair (0, 1) crosses the boundary), vocab 3:
//   c(0,1) = 2, c(1,0) = 1, c(1,1) = 1;  c(0) = 2, c(1) = 2, c(2) = 0.
// With k = 1: P(1|0) = 3/5, P(1|1) = 2/5, P(2|1) = 1/5, P(0|2) = 1/3.
// Validation stream 0 1 1 2 0 scores those four pairs.
struct TinyCorpus {
  ScratchDir dir;
  TinyCorpus() {
    std::filesystem::create_directories(dir.path() / "train");
    write(dir / "train/a.bin", {0, 1, 0});
    write(dir / "train/b.bin", {1, 1});
    write(dir / "val.bin", {0, 1, 1, 2, 0});
  }
};

TEST(Bigram, CrossEntropyOfATinyCorpusByHand) {
  TinyCorpus c;
  const TokenDataset train(c.dir / "train", 3);
  const TokenDataset val(c.dir / "val.bin", 3);
  BigramModel model(3, 1.0);
  model.fit(train);
  EXPECT_EQ(model.pairs(), 4u);
  EXPECT_DOUBLE_EQ(model.probability(0, 1), 3.0 / 5);
  EXPECT_DOUBLE_EQ(model.probability(1, 0), 2.0 / 5);
  EXPECT_DOUBLE_EQ(model.probability(2, 2), 1.0 / 3);
  const double expected = -(std::log(3.0 / 5) + std::log(2.0 / 5) + std::log(1.0 / 5) + std::log(1.0 / 3)) / 4;
  EXPECT_NEAR(model.cross_entropy(val), expected, 1e-15);
}

TEST(Bigram, AddHalfSmoothing) {
  TinyCorpus c;
  BigramModel model(3, 0.5);
  model.fit(TokenDataset(c.dir / "train", 3));
  // (c + 1/2) / (c(a) + 3/2): P(1|0) = 2.5/3.5, P(1|1) = 1.5/3.5, P(2|1) = 0.5/3.5, P(0|2) = 1/3.
  const double expected =
      -(std::log(2.5 / 3.5) + std::log(1.5 / 3.5) + std::log(0.5 / 3.5) + std::log(1.0 / 3)) / 4;
  EXPECT_NEAR(model.cross_entropy(TokenDataset(c.dir / "val.bin", 3)), expected, 1e-15);
}

TEST(Bigram, ConditionalsAreDistributions) {
  TinyCorpus c;
  BigramModel model(3, 0.1);
  model.fit(TokenDataset(c.dir / "train", 3));
  for (int a = 0; a < 3; ++a) {
    double sum = 0;
    for (int b = 0; b < 3; ++b) sum += model.probability(a, b);
    EXPECT_NEAR(sum, 1.0, 1e-15) << "context " << a;
  }
}

TEST(Bigram, SmoothingMustBePositive) {
  EXPECT_THAT(testing::input_error([] { BigramModel(3, 0.0); }), ::testing::HasSubstr("k = 0 is out of range"));
}

}  // namespace
}  // namespace finemoe
