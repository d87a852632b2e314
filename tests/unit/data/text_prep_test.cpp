#include "data/text_prep.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "data/token_dataset.h"
#include "data_test_util.h"

namespace finemoe {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Pair;
using testing::input_error;
using testing::ScratchDir;
using testing::write_bytes;

std::string tokens_as_text(const std::string& spec) {
  const TokenDataset data(spec, 256);
  std::string text;
  for (std::size_t i = 0; i < data.size(); ++i) text.push_back(static_cast<char>(data.at(i)));
  return text;
}

std::size_t count_shards(const std::string& dir) {
  std::size_t n = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) n += e.path().extension() == ".bin";
  return n;
}

TEST(TextPrep, ValidationBlocksAreEvenlySpread) {
  std::vector<std::size_t> val;
  for (std::size_t b = 0; b < 12; ++b) {
    if (is_validation_block(b, 0.25)) val.push_back(b);
  }
  EXPECT_THAT(val, ElementsAre(3, 7, 11));
}

TEST(TextPrep, SplitsContiguousBlocksOfTheDocumentStream) {
  ScratchDir in, out;
  write_bytes(in / "2.txt", "defgh");
  write_bytes(in / "1.txt", "abc");
  TextPrepOptions o;
  o.inputs = {in.path().string()};
  o.out_dir = out.path().string();
  o.val_fraction = 0.5;
  o.block_bytes = 2;
  o.shard_tokens = 4;
  const TextPrepSummary s = prepare_text_shards(o);
  // Stream "\0abc\0defgh" in blocks of 2: [\0a] [bc] [\0d] [ef] [gh]; blocks 1 and 3 validate.
  const std::string nul(1, '\0');
  EXPECT_EQ(tokens_as_text(out / "train"), nul + "a" + nul + "dgh");
  EXPECT_EQ(tokens_as_text(out / "val"), "bcef");
  EXPECT_EQ(s.documents, 2u);
  EXPECT_EQ(s.train_tokens, 6u);
  EXPECT_EQ(s.val_tokens, 4u);
  EXPECT_THAT(s.train_shards, ElementsAre(Pair(out / "train/train_000000.bin", 4u), Pair(out / "train/train_000001.bin", 2u)));
  EXPECT_THAT(s.val_shards, ElementsAre(Pair(out / "val/val_000000.bin", 4u)));
}

TEST(TextPrep, ByteCountsOfALargerCorpus) {
  ScratchDir in, out;
  std::mt19937 gen(5);
  std::uniform_int_distribution<int> letter('a', 'z');
  std::size_t text_bytes = 0;
  std::filesystem::create_directories(in.path() / "sub" / "deeper");
  const std::vector<std::string> names = {"x.txt", "sub/y.txt", "sub/deeper/z.rst", "w.txt"};
  for (std::size_t f = 0; f < names.size(); ++f) {
    std::string text(1000 + 3777 * f, ' ');
    for (char& c : text) c = static_cast<char>(letter(gen));
    text_bytes += text.size();
    write_bytes(in / names[f], text);
  }
  TextPrepOptions o;
  // A file, a glob matching a folder, and the file again (taken once).
  o.inputs = {in / "w.txt", in / "s*", in / "w.txt"};
  o.out_dir = out.path().string();
  o.val_fraction = 0.25;
  o.block_bytes = 100;
  const TextPrepSummary s = prepare_text_shards(o);
  const std::size_t stream = text_bytes - 1000 + 3;  // x.txt left out; three document starts
  const std::size_t blocks = (stream + 99) / 100;
  EXPECT_EQ(s.documents, 3u);
  EXPECT_EQ(s.train_tokens + s.val_tokens, stream);
  // Validation blocks are 3, 7, 11, ... and all whole (the stream does not end on one).
  ASSERT_NE(blocks % 4, 0u);
  EXPECT_EQ(s.val_tokens, 100 * (blocks / 4));
  EXPECT_EQ(TokenDataset(out / "val", 256).size(), s.val_tokens);
  EXPECT_EQ(TokenDataset(out / "train", 256).size(), s.train_tokens);
}

TEST(TextPrep, RefusesToMixWithOldShardsUnlessOverwriting) {
  ScratchDir in, out;
  write_bytes(in / "a.txt", std::string(100, 'a'));
  TextPrepOptions o;
  o.inputs = {in / "a.txt"};
  o.out_dir = out.path().string();
  o.val_fraction = 0.5;
  o.block_bytes = 10;
  o.shard_tokens = 10;
  prepare_text_shards(o);
  EXPECT_EQ(count_shards(out / "train"), 6u);
  EXPECT_THAT(input_error([&] { prepare_text_shards(o); }),
              AllOf(HasSubstr(out / "train"), HasSubstr("already holds shards"), HasSubstr("--overwrite")));
  o.overwrite = true;
  o.shard_tokens = 1000;
  prepare_text_shards(o);
  EXPECT_EQ(count_shards(out / "train"), 1u);
  EXPECT_EQ(count_shards(out / "val"), 1u);
}

TEST(TextPrep, BadInputs) {
  ScratchDir in, out;
  write_bytes(in / "ok.txt", std::string(1000, 'o'));
  write_bytes(in / "z_binary.dat", std::string("ab\0cd", 5));
  TextPrepOptions o;
  o.out_dir = out.path().string();
  o.shard_tokens = 100;
  o.block_bytes = 10;

  o.inputs = {in / "missing.txt"};
  EXPECT_THAT(input_error([&] { prepare_text_shards(o); }), AllOf(HasSubstr(in / "missing.txt"), HasSubstr("does not exist")));
  o.inputs = {in / "*.md"};
  EXPECT_THAT(input_error([&] { prepare_text_shards(o); }), HasSubstr("no file matches the input pattern"));
  o.inputs = {};
  EXPECT_THAT(input_error([&] { prepare_text_shards(o); }), HasSubstr("no input"));

  o.inputs = {in / "ok.txt"};
  o.val_fraction = 1.0;
  EXPECT_THAT(input_error([&] { prepare_text_shards(o); }), HasSubstr("--val-fraction 1 is out of range"));
  o.val_fraction = 0.05;
  o.block_bytes = 100;  // 1001 bytes = 11 blocks, 5% of them is no whole block
  EXPECT_THAT(input_error([&] { prepare_text_shards(o); }),
              AllOf(HasSubstr("1001 bytes = 11 blocks"), HasSubstr("takes no whole block")));

  // A file that is not text, after shards of the first were written: nothing is left behind.
  o.block_bytes = 10;
  o.inputs = {in.path().string()};
  EXPECT_THAT(input_error([&] { prepare_text_shards(o); }),
              AllOf(HasSubstr(in / "z_binary.dat"), HasSubstr("NUL byte at offset 2")));
  EXPECT_EQ(count_shards(out / "train"), 0u);
  EXPECT_EQ(count_shards(out / "val"), 0u);
}

}  // namespace
}  // namespace finemoe
