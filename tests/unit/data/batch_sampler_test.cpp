#include "data/batch_sampler.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <map>
#include <set>
#include <vector>

#include "data_test_util.h"

namespace finemoe {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using testing::input_error;
using testing::ScratchDir;

constexpr int kContext = 16;

// Token i of the stream is i, over three shards, so a sequence reveals its offset.
struct CountingData {
  ScratchDir dir;
  std::size_t n;
  explicit CountingData(std::size_t n_tokens) : n(n_tokens) {
    std::vector<uint16_t> all(n);
    for (std::size_t i = 0; i < n; ++i) all[i] = static_cast<uint16_t>(i);
    const std::size_t cut1 = n / 3;
    const std::size_t cut2 = 2 * n / 3;
    write_shard(dir / "a.bin", all.data(), cut1);
    write_shard(dir / "b.bin", all.data() + cut1, cut2 - cut1);
    write_shard(dir / "c.bin", all.data() + cut2, n - cut2);
  }
};

struct Batch {
  std::vector<int32_t> inputs;
  std::vector<int32_t> targets;
  bool operator==(const Batch& o) const { return inputs == o.inputs && targets == o.targets; }
};

// The global batch of `total` sequences as drawn by `ranks` ranks, each filling its contiguous slice.
Batch draw(const BatchSampler& sampler, uint64_t step, int total, int ranks) {
  Batch b{std::vector<int32_t>(std::size_t(total) * kContext), std::vector<int32_t>(std::size_t(total) * kContext)};
  const int per_rank = total / ranks;
  for (int r = 0; r < ranks; ++r) {
    const std::size_t first = std::size_t(r) * per_rank;
    sampler.fill(step, first, per_rank, b.inputs.data() + first * kContext, b.targets.data() + first * kContext);
  }
  return b;
}

TEST(BatchSampler, SameKeysGiveTheSameBatchOtherKeysAnother) {
  CountingData d(5000);
  const TokenDataset data(d.dir.path().string(), 65536);
  const BatchSampler a(data, kContext, 7, kTrainStream);
  const BatchSampler b(data, kContext, 7, kTrainStream);
  EXPECT_EQ(draw(a, 3, 8, 1), draw(b, 3, 8, 1));
  EXPECT_FALSE(draw(a, 3, 8, 1) == draw(a, 4, 8, 1)) << "steps";
  EXPECT_FALSE(draw(a, 3, 8, 1) == draw(BatchSampler(data, kContext, 8, kTrainStream), 3, 8, 1)) << "seeds";
  EXPECT_FALSE(draw(a, 3, 8, 1) == draw(BatchSampler(data, kContext, 7, kEvalStream), 3, 8, 1)) << "streams";
}

TEST(BatchSampler, GlobalBatchDoesNotDependOnTheRankLayout) {
  CountingData d(5000);
  const TokenDataset data(d.dir.path().string(), 65536);
  const BatchSampler sampler(data, kContext, 11, kTrainStream);
  for (uint64_t step : {0u, 1u, 1000u}) {
    const Batch one = draw(sampler, step, 8, 1);
    EXPECT_EQ(one, draw(sampler, step, 8, 2)) << "step " << step;
    EXPECT_EQ(one, draw(sampler, step, 8, 4)) << "step " << step;
    EXPECT_EQ(one, draw(sampler, step, 8, 8)) << "step " << step;
  }
}

TEST(BatchSampler, SequencesAreContiguousTextAndTargetsAreShiftedInputs) {
  CountingData d(5000);
  const TokenDataset data(d.dir.path().string(), 65536);
  const BatchSampler sampler(data, kContext, 3, kTrainStream);
  const Batch b = draw(sampler, 5, 64, 1);
  for (int j = 0; j < 64; ++j) {
    const auto off = static_cast<int32_t>(sampler.offset(5, j));
    for (int t = 0; t < kContext; ++t) {
      EXPECT_EQ(b.inputs[j * kContext + t], off + t) << "sequence " << j << " position " << t;
      EXPECT_EQ(b.targets[j * kContext + t], off + t + 1) << "sequence " << j << " position " << t;
    }
  }
}

TEST(BatchSampler, OffsetsCoverTheWholeRangeUniformly) {
  // n - context = 4 possible offsets: 0..3, the last one ending on the stream's last token.
  CountingData d(kContext + 4);
  const TokenDataset data(d.dir.path().string(), 65536);
  const BatchSampler sampler(data, kContext, 1, kTrainStream);
  std::map<uint64_t, int> seen;
  constexpr int kDraws = 40000;
  for (int i = 0; i < kDraws; ++i) ++seen[sampler.offset(i / 100, i % 100)];
  ASSERT_EQ(seen.size(), 4u);
  EXPECT_EQ(seen.begin()->first, 0u);
  EXPECT_EQ(seen.rbegin()->first, 3u);
  // Binomial std is sqrt(40000 * 1/4 * 3/4) ~ 87; allow 5 sigma.
  for (const auto& [offset, count] : seen) EXPECT_NEAR(count, kDraws / 4, 435) << "offset " << offset;
  // The last offset's target is the stream's last token.
  std::vector<int32_t> in(kContext), tg(kContext);
  for (int i = 0;; ++i) {
    if (sampler.offset(0, i) != 3) continue;
    sampler.fill(0, i, 1, in.data(), tg.data());
    EXPECT_EQ(tg.back(), int32_t(d.n - 1));
    break;
  }
}

TEST(BatchSampler, SequencesOfABatchAreNotConsecutiveChunks) {
  CountingData d(60000);
  const TokenDataset data(d.dir.path().string(), 65536);
  const BatchSampler sampler(data, kContext, 2, kTrainStream);
  std::set<uint64_t> offsets;
  int consecutive = 0;
  for (int j = 0; j < 256; ++j) {
    offsets.insert(sampler.offset(0, j));
    if (j > 0 && sampler.offset(0, j) == sampler.offset(0, j - 1) + kContext) ++consecutive;
  }
  EXPECT_GT(offsets.size(), 240u);
  EXPECT_EQ(consecutive, 0);
}

TEST(BatchSampler, EvalBatchesAreFixedHeldOutSequences) {
  CountingData d(5000);
  const TokenDataset val(d.dir.path().string(), 65536, "data.val");
  const EvalBatches eval(val, kContext, 9);
  std::vector<int32_t> in1(4 * kContext), tg1(4 * kContext), in2(4 * kContext), tg2(4 * kContext);
  eval.fill(0, 4, in1.data(), tg1.data());
  eval.fill(0, 4, in2.data(), tg2.data());
  EXPECT_EQ(in1, in2);
  EXPECT_EQ(tg1, tg2);
  const Batch from_sampler = draw(BatchSampler(val, kContext, 9, kEvalStream), 0, 4, 1);
  EXPECT_EQ(in1, from_sampler.inputs);
  EXPECT_EQ(tg1, from_sampler.targets);
  EXPECT_FALSE(in1 == draw(BatchSampler(val, kContext, 9, kTrainStream), 0, 4, 1).inputs);
}

TEST(BatchSampler, DatasetShorterThanOneSequence) {
  CountingData d(kContext);
  const TokenDataset data(d.dir.path().string(), 65536, "data.val");
  EXPECT_THAT(input_error([&] { BatchSampler(data, kContext, 1, kTrainStream); }),
              AllOf(HasSubstr("data.val"), HasSubstr("holds 16 tokens"), HasSubstr("model.context = 16"),
                    HasSubstr("at least 17")));
  EXPECT_NO_THROW(BatchSampler(data, kContext - 1, 1, kTrainStream));
}

}  // namespace
}  // namespace finemoe
