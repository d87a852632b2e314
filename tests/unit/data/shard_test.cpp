#include "data/shard.h"

#include <gtest/gtest.h>
#include <gmock/gmock.h>

#include <filesystem>
#include <fstream>
#include <vector>

#include "data_test_util.h"

namespace finemoe {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using testing::input_error;
using testing::ScratchDir;
using testing::write_raw_shard;

TEST(Shard, RoundTripKeepsTokensAndWritesLlmcHeader) {
  ScratchDir dir;
  const std::string path = dir / "s.bin";
  const std::vector<uint16_t> tokens = {0, 1, 255, 256, 40000, 65535, 7};
  write_shard(path, tokens.data(), tokens.size());

  // The bytes on disk, read independently of Shard.
  std::ifstream in(path, std::ios::binary);
  std::vector<int32_t> header(256);
  in.read(reinterpret_cast<char*>(header.data()), 1024);
  EXPECT_EQ(header[0], 20240520);
  EXPECT_EQ(header[1], 1);
  EXPECT_EQ(header[2], static_cast<int32_t>(tokens.size()));
  for (int i = 3; i < 256; ++i) EXPECT_EQ(header[i], 0) << "header int " << i;
  EXPECT_EQ(std::filesystem::file_size(path), 1024 + 2 * tokens.size());

  const Shard shard(path, 65536);
  EXPECT_EQ(shard.path(), path);
  ASSERT_EQ(shard.size(), tokens.size());
  EXPECT_EQ(std::vector<uint16_t>(shard.tokens(), shard.tokens() + shard.size()), tokens);
}

TEST(Shard, WriterAppendsInPiecesAndMoveKeepsTheMapping) {
  ScratchDir dir;
  const std::string path = dir / "s.bin";
  {
    ShardWriter writer(path);
    const uint16_t a[] = {1, 2, 3};
    const uint16_t b[] = {4, 5};
    writer.append(a, 3);
    writer.append(b, 2);
    EXPECT_EQ(writer.count(), 5u);
    writer.close();
  }
  Shard first(path, 6);
  const Shard moved(std::move(first));
  ASSERT_EQ(moved.size(), 5u);
  for (std::size_t i = 0; i < 5; ++i) EXPECT_EQ(moved.tokens()[i], i + 1);
}

TEST(Shard, EmptyShardIsValid) {
  ScratchDir dir;
  write_shard(dir / "e.bin", nullptr, 0);
  EXPECT_EQ(Shard(dir / "e.bin", 256).size(), 0u);
}

TEST(Shard, WriterWithoutCloseLeavesNoFile) {
  ScratchDir dir;
  const std::string path = dir / "partial.bin";
  {
    ShardWriter writer(path);
    const uint16_t a[] = {1, 2, 3};
    writer.append(a, 3);
  }
  EXPECT_FALSE(std::filesystem::exists(path));
}

TEST(Shard, MissingFile) {
  ScratchDir dir;
  const std::string path = dir / "none.bin";
  EXPECT_THAT(input_error([&] { Shard(path, 256); }), AllOf(HasSubstr(path), HasSubstr("cannot open")));
}

TEST(Shard, WrongMagic) {
  ScratchDir dir;
  const std::string path = dir / "m.bin";
  write_raw_shard(path, 20240519, 1, 2, {1, 2});
  EXPECT_THAT(input_error([&] { Shard(path, 256); }),
              AllOf(HasSubstr(path), HasSubstr("wrong magic number 20240519"), HasSubstr("20240520")));
}

TEST(Shard, WrongVersion) {
  ScratchDir dir;
  const std::string path = dir / "v.bin";
  write_raw_shard(path, 20240520, 2, 2, {1, 2});
  EXPECT_THAT(input_error([&] { Shard(path, 256); }),
              AllOf(HasSubstr(path), HasSubstr("unsupported version 2")));
}

TEST(Shard, TruncatedTokens) {
  ScratchDir dir;
  const std::string path = dir / "t.bin";
  write_raw_shard(path, 20240520, 1, 10, {1, 2, 3, 4, 5, 6, 7, 8, 9});
  EXPECT_THAT(input_error([&] { Shard(path, 256); }),
              AllOf(HasSubstr(path), HasSubstr("header says 10 tokens (1044 bytes"), HasSubstr("1042 bytes"),
                    HasSubstr("truncated")));
}

TEST(Shard, TruncatedHeader) {
  ScratchDir dir;
  const std::string path = dir / "h.bin";
  testing::write_bytes(path, std::string(100, 'x'));
  EXPECT_THAT(input_error([&] { Shard(path, 256); }),
              AllOf(HasSubstr(path), HasSubstr("100 bytes"), HasSubstr("too short for the 1024-byte header")));
}

TEST(Shard, TrailingData) {
  ScratchDir dir;
  const std::string path = dir / "x.bin";
  write_raw_shard(path, 20240520, 1, 2, {1, 2, 3});
  EXPECT_THAT(input_error([&] { Shard(path, 256); }),
              AllOf(HasSubstr(path), HasSubstr("header says 2 tokens"), HasSubstr("trailing data")));
}

TEST(Shard, NegativeCount) {
  ScratchDir dir;
  const std::string path = dir / "n.bin";
  write_raw_shard(path, 20240520, 1, -3, {});
  EXPECT_THAT(input_error([&] { Shard(path, 256); }), AllOf(HasSubstr(path), HasSubstr("negative token count -3")));
}

TEST(Shard, TokenOutOfVocab) {
  ScratchDir dir;
  const std::string path = dir / "o.bin";
  write_raw_shard(path, 20240520, 1, 4, {1, 255, 256, 3});
  EXPECT_THAT(input_error([&] { Shard(path, 256); }),
              AllOf(HasSubstr(path), HasSubstr("token 256 at position 2"), HasSubstr("vocab 256")));
  EXPECT_EQ(Shard(path, 257).size(), 4u);
}

}  // namespace
}  // namespace finemoe
