#include "data/token_dataset.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <vector>

#include "data_test_util.h"

namespace finemoe {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing::input_error;
using testing::ScratchDir;

void write(const std::string& path, const std::vector<uint16_t>& tokens) {
  write_shard(path, tokens.data(), tokens.size());
}

// Shards named out of creation order, an empty one between, and a file that is not a shard.
struct ThreeShards {
  ScratchDir dir;
  std::vector<int32_t> stream = {10, 11, 12, 13, 20, 21, 30, 31, 32};
  ThreeShards() {
    write(dir / "s_c.bin", {30, 31, 32});
    write(dir / "s_a.bin", {10, 11, 12, 13});
    write(dir / "s_b0.bin", {});
    write(dir / "s_b1.bin", {20, 21});
    testing::write_bytes(dir / "notes.txt", "not a shard");
  }
};

void expect_stream(const TokenDataset& data, const std::vector<int32_t>& stream) {
  ASSERT_EQ(data.size(), stream.size());
  for (std::size_t i = 0; i < stream.size(); ++i) EXPECT_EQ(data.at(i), stream[i]) << "token " << i;
  // Every window, crossing shard boundaries and the empty shard.
  for (std::size_t begin = 0; begin <= stream.size(); ++begin) {
    for (std::size_t count = 0; begin + count <= stream.size(); ++count) {
      std::vector<int32_t> out(count + 1, -1);
      data.copy(begin, count, out.data());
      EXPECT_EQ(std::vector<int32_t>(out.begin(), out.begin() + count),
                std::vector<int32_t>(stream.begin() + begin, stream.begin() + begin + count))
          << "begin " << begin << " count " << count;
      EXPECT_EQ(out[count], -1) << "wrote past the window";
    }
  }
}

TEST(TokenDataset, DirectoryIsItsBinShardsInNameOrder) {
  ThreeShards s;
  const TokenDataset data(s.dir.path().string(), 256);
  EXPECT_THAT(resolve_shard_files(s.dir.path().string()),
              ElementsAre(s.dir / "s_a.bin", s.dir / "s_b0.bin", s.dir / "s_b1.bin", s.dir / "s_c.bin"));
  EXPECT_EQ(data.shards().size(), 4u);
  expect_stream(data, s.stream);
}

TEST(TokenDataset, GlobAndSingleFile) {
  ThreeShards s;
  expect_stream(TokenDataset(s.dir / "s_*.bin", 256), s.stream);
  expect_stream(TokenDataset(s.dir / "s_b1.bin", 256), {20, 21});
}

TEST(TokenDataset, ErrorsNameTheDatasetAndThePath) {
  ThreeShards s;
  EXPECT_THAT(input_error([&] { TokenDataset(s.dir / "missing", 256, "data.val"); }),
              AllOf(HasSubstr("data.val"), HasSubstr(s.dir / "missing"), HasSubstr("does not exist")));
  EXPECT_THAT(input_error([&] { TokenDataset(s.dir / "x_*.bin", 256, "data.train"); }),
              AllOf(HasSubstr("data.train"), HasSubstr("no file matches"), HasSubstr(s.dir / "x_*.bin")));
  ScratchDir empty;
  EXPECT_THAT(input_error([&] { TokenDataset(empty.path().string(), 256); }),
              AllOf(HasSubstr(empty.path().string()), HasSubstr("holds no shard (*.bin)")));
  EXPECT_THAT(input_error([&] { TokenDataset(s.dir / "s_b0.bin", 256); }), HasSubstr("hold no token"));
  // One bad shard among good ones: the message names it.
  testing::write_raw_shard(s.dir / "s_d.bin", 1, 1, 0, {});
  EXPECT_THAT(input_error([&] { TokenDataset(s.dir.path().string(), 256, "data.train"); }),
              AllOf(HasSubstr("data.train"), HasSubstr(s.dir / "s_d.bin"), HasSubstr("wrong magic")));
  // Validated against the vocab.
  EXPECT_THAT(input_error([&] { TokenDataset(s.dir / "s_c.bin", 32); }),
              AllOf(HasSubstr(s.dir / "s_c.bin"), HasSubstr("token 32 at position 2")));
}

}  // namespace
}  // namespace finemoe
