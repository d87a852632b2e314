#include "checkpoint/manifest.h"

#include <gtest/gtest.h>
#include <zlib.h>

#include <cstdio>

#include "util/check.h"

namespace finemoe {
namespace {

// Two replicated tensors and one expert tensor over 4 experts in two files (as EP = 2 writes).
Manifest example() {
  Manifest m;
  m.progress = TrainProgress{40, 81920, 0xfedcba9876543210ULL, 0.1 + 0.2, 2};
  m.model.precision = "f64";
  m.model.n_experts = 4;
  m.model.tensors = {{"embed.weight", ParamGroup::replicated, 1, {16, 8}},
                     {"blocks.0.ln.gain", ParamGroup::replicated, 1, {8}},
                     {"blocks.0.moe.w_in", ParamGroup::expert, 4, {8, 6}}};
  m.saved_world_size = 4;
  m.saved_expert_parallel = 2;
  const int64_t rep = 16 + 3 * (16 * 8 + 8) * 8, exp = 16 + 3 * 2 * 48 * 8;
  m.files = {{"replicated.bin", rep, 0x01234567u}, {"experts_0.bin", exp, 0x89abcdefu}, {"experts_1.bin", exp, 7u}};
  m.segments = {{"replicated.bin", "embed.weight", 0, 1, 16},
                {"replicated.bin", "blocks.0.ln.gain", 0, 1, 16 + 3 * 128 * 8},
                {"experts_0.bin", "blocks.0.moe.w_in", 0, 2, 16},
                {"experts_1.bin", "blocks.0.moe.w_in", 2, 2, 16}};
  return m;
}

std::string corrupt_reason(const std::string& text) {
  try {
    parse_manifest(text, "run/checkpoints/step_40/manifest.txt");
  } catch (const CorruptCheckpoint& e) {
    return e.what();
  }
  return "accepted";
}

TEST(Manifest, RoundTripsExactly) {
  const Manifest m = example();
  const std::string text = format_manifest(m);
  const Manifest back = parse_manifest(text, "manifest.txt");
  EXPECT_EQ(back.progress.step, 40);
  EXPECT_EQ(back.progress.tokens, 81920);
  EXPECT_EQ(back.progress.seed, 0xfedcba9876543210ULL);
  EXPECT_EQ(back.progress.wall_time_s, 0.1 + 0.2);  // bit-exact, not 0.3
  EXPECT_EQ(back.progress.restarts, 2);
  EXPECT_EQ(back.model.precision, "f64");
  EXPECT_EQ(back.model.n_experts, 4);
  ASSERT_EQ(back.model.tensors.size(), 3u);
  EXPECT_EQ(back.model.tensors[2].name, "blocks.0.moe.w_in");
  EXPECT_EQ(back.model.tensors[2].group, ParamGroup::expert);
  EXPECT_EQ(back.model.tensors[2].experts, 4);
  EXPECT_EQ(back.model.tensors[2].shape_per_expert, (std::vector<int64_t>{8, 6}));
  ASSERT_EQ(back.files.size(), 3u);
  EXPECT_EQ(back.files[1].crc32, 0x89abcdefu);
  EXPECT_EQ(back.files[1].bytes, m.files[1].bytes);
  ASSERT_EQ(back.segments.size(), 4u);
  EXPECT_EQ(back.segments[3].first_expert, 2);
  EXPECT_EQ(back.segments[1].offset, m.segments[1].offset);
  EXPECT_EQ(format_manifest(back), text);
}

TEST(Manifest, FlippedByteIsRejectedByItsChecksum) {
  std::string text = format_manifest(example());
  text[text.find("tokens 8") + 7] = '9';
  const std::string why = corrupt_reason(text);
  EXPECT_NE(why.find("step_40/manifest.txt"), std::string::npos) << why;
  EXPECT_NE(why.find("checksum mismatch"), std::string::npos) << why;
}

TEST(Manifest, TruncatedTextIsRejected) {
  const std::string text = format_manifest(example());
  for (size_t keep : {size_t(0), size_t(20), text.size() / 2, text.size() - 1}) {
    const std::string why = corrupt_reason(text.substr(0, keep));
    EXPECT_NE(why.find("manifest.txt"), std::string::npos) << keep << ": " << why;
    EXPECT_NE(why, "accepted") << keep;
  }
}

TEST(Manifest, SegmentsMustCoverEveryExpertOnce) {
  Manifest gap = example();
  gap.segments.pop_back();
  EXPECT_NE(corrupt_reason(format_manifest(gap)).find("do not cover its 4 expert(s)"), std::string::npos);

  Manifest overlap = example();
  overlap.segments.push_back({"experts_1.bin", "blocks.0.moe.w_in", 3, 1, 16});
  EXPECT_NE(corrupt_reason(format_manifest(overlap)).find("blocks.0.moe.w_in"), std::string::npos);

  Manifest outside = example();
  outside.files[2].bytes -= 1;
  EXPECT_NE(corrupt_reason(format_manifest(outside)).find("lies outside experts_1.bin"), std::string::npos);

  Manifest unlisted = example();
  unlisted.segments[0].file = "other.bin";
  EXPECT_NE(corrupt_reason(format_manifest(unlisted)).find("unlisted file 'other.bin'"), std::string::npos);
}

TEST(Manifest, OtherFormatVersionIsAnInputError) {
  const std::string text = format_manifest(example());
  std::string body = text.substr(0, text.rfind("manifest_crc32"));
  body.replace(0, body.find('\n'), "finemoe-checkpoint 2");
  char crc[16];
  std::snprintf(crc, sizeof crc, "%08lx", crc32(0L, reinterpret_cast<const Bytef*>(body.data()), body.size()));
  try {
    parse_manifest(body + "manifest_crc32 " + crc + "\n", "m/manifest.txt");
    ADD_FAILURE() << "version 2 accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("m/manifest.txt: checkpoint format version 2; this build reads 1"),
              std::string::npos)
        << e.what();
  }
}

ModelDescription current() { return example().model; }

std::string incompatibility(const ModelDescription& saved) {
  try {
    check_compatible(saved, current(), "ckpt/manifest.txt");
  } catch (const InputError& e) {
    return e.what();
  }
  return "compatible";
}

TEST(Manifest, CompatibilityNamesTheKeyThatDiffers) {
  EXPECT_EQ(incompatibility(current()), "compatible");

  ModelDescription precision = current();
  precision.precision = "f32";
  EXPECT_NE(incompatibility(precision).find("precision is f32 in the checkpoint, f64 in this run"), std::string::npos);

  ModelDescription experts = current();
  experts.n_experts = 8;
  experts.tensors[2].experts = 8;
  EXPECT_NE(incompatibility(experts).find("n_experts is 8 in the checkpoint, 4 in this run"), std::string::npos);

  ModelDescription shape = current();
  shape.tensors[2].shape_per_expert = {8, 12};
  const std::string why = incompatibility(shape);
  EXPECT_NE(why.find("ckpt/manifest.txt"), std::string::npos) << why;
  EXPECT_NE(why.find("'blocks.0.moe.w_in' has shape per expert [8, 12] in the checkpoint, [8, 6] in this run"),
            std::string::npos)
      << why;

  ModelDescription missing = current();
  missing.tensors.erase(missing.tensors.begin() + 1);
  EXPECT_NE(incompatibility(missing).find("'blocks.0.ln.gain' is in this run's model but not in the checkpoint"),
            std::string::npos);

  ModelDescription extra = current();
  extra.tensors.push_back({"head.bias", ParamGroup::replicated, 1, {16}});
  EXPECT_NE(incompatibility(extra).find("'head.bias' is in the checkpoint but not in this run's model"),
            std::string::npos);

  ModelDescription group = current();
  group.tensors[1].group = ParamGroup::expert;
  EXPECT_NE(incompatibility(group).find("'blocks.0.ln.gain' is expert in the checkpoint, replicated in this run"),
            std::string::npos);
}

TEST(Manifest, TensorOrderDoesNotMatter) {
  ModelDescription reordered = current();
  std::swap(reordered.tensors[0], reordered.tensors[2]);
  EXPECT_EQ(incompatibility(reordered), "compatible");
}

}  // namespace
}  // namespace finemoe
