// Parameter-file parsing: sections map to dotted keys, the command line overrides the file,
// --print-config round-trips, and validation names the key, value and origin.
#include <gtest/gtest.h>

#include <fstream>

#include "config/options.h"
#include "config/validate.h"
#include "util/check.h"

namespace finemoe {
namespace {

std::string write_file(const std::string& name, const std::string& text) {
  const std::string path = ::testing::TempDir() + name;
  std::ofstream(path) << text;
  return path;
}

CommandLine parse(std::vector<std::string> args) {
  args.insert(args.begin(), "finemoe-train");
  std::vector<const char*> argv;
  for (auto& a : args) argv.push_back(a.c_str());
  return parse_command_line(int(argv.size()), argv.data());
}

TEST(Config, SectionsMapToDottedKeysAndCommandLineOverrides) {
  const auto path = write_file("a.ini", "[model]\nd_model = 96\nn_heads = 3\n[moe]\ngranularity = 4\n");
  auto cli = parse({path, "--model.d_model=48", "--train.steps=7"});
  EXPECT_EQ(cli.config.model.d_model, 48);
  EXPECT_EQ(cli.config.model.n_heads, 3);
  EXPECT_EQ(cli.config.moe.granularity, 4);
  EXPECT_EQ(cli.config.train.steps, 7);
  EXPECT_EQ(cli.config.origin_of("model.d_model"), "command line");
  EXPECT_EQ(cli.config.origin_of("model.n_heads"), path);
  EXPECT_EQ(cli.config.origin_of("model.vocab"), "default");
}

TEST(Config, PrintedConfigParsesBackToTheSameValues) {
  auto cli = parse({"--model.d_model=64", "--train.lr=0.00037", "--moe.routing=token_choice",
                    "--output.dir=/tmp/x y"});
  const std::string ini = config_to_ini(cli.config);
  const Config again = parse_config_text(ini, "printed");
  EXPECT_EQ(config_items(again), config_items(cli.config));
  EXPECT_NE(ini.find("[moe]\n"), std::string::npos);
  EXPECT_NE(ini.find("lr = 0.00037\n"), std::string::npos);
}

TEST(Config, HelpListsEveryKeyWithDefault) {
  const std::string help = options_help();
  for (const auto& [key, value] : config_items(Config{})) {
    EXPECT_NE(help.find(key), std::string::npos) << key;
  }
  EXPECT_NE(help.find("--model.d_model arg (=128)"), std::string::npos);
}

TEST(Config, UnknownKeySuggestsNearest) {
  const auto path = write_file("b.ini", "[model]\nd_modle = 64\n");
  try {
    parse({path});
    FAIL() << "no error";
  } catch (const InputError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find(path), std::string::npos) << m;
    EXPECT_NE(m.find("'model.d_modle'"), std::string::npos) << m;
    EXPECT_NE(m.find("did you mean 'model.d_model'"), std::string::npos) << m;
  }
}

TEST(Config, KeyInWrongSectionSuggestsTheRightOne) {
  const auto path = write_file("c.ini", "[train]\ngranularity = 4\n");
  try {
    parse({path});
    FAIL() << "no error";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("did you mean 'moe.granularity'"), std::string::npos) << e.what();
  }
}

TEST(Config, ValidationNamesOriginKeyValueAndRule) {
  const auto path = write_file("d.ini", "[model]\nd_model = 100\nn_heads = 3\n");
  auto cli = parse({path, "--train.steps=1", "--data.train=/nonexistent"});
  ValidationContext ctx;
  ctx.check_data_files = false;
  try {
    validate_config(cli.config, ctx);
    FAIL() << "no error";
  } catch (const InputError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("error in " + path + ": model.d_model = 100 is invalid: must be divisible by model.n_heads = 3"),
              std::string::npos) << m;
  }
}

// Issue 20: the swiglu width 8 d / (3 G) to the nearest multiple of 8 (halves up), at least 8.
TEST(Config, SwigluWidthRoundsToTheNearestMultipleOfEight) {
  struct Row { int d, G, width; };
  for (const Row r : {Row{16, 1, 40}, Row{16, 2, 24}, Row{64, 1, 168}, Row{64, 4, 40}, Row{768, 8, 256},
                      Row{16, 8, 8}, Row{12, 1, 32}, Row{9, 2, 16}, Row{1, 1, 8}}) {
    const double exact = 8.0 * r.d / (3.0 * r.G);
    EXPECT_EQ(ffn_hidden_width(r.d, r.G, "swiglu"), r.width) << "d " << r.d << " G " << r.G << " (8d/3G = " << exact << ")";
    if (r.width == 8) {
      EXPECT_LE(exact, 12.0) << "the minimum, or the nearest multiple of 8";
    } else {
      EXPECT_LE(std::abs(r.width - exact), 4.0) << "within half a step of 8";
    }
  }
  EXPECT_EQ(ffn_hidden_width(64, 4, "relu"), 64);
  EXPECT_EQ(ffn_hidden_width(64, 4, "gelu"), 64);
}

TEST(Config, SharedExpertsOutsideZeroToGMinusOneAreRefused) {
  for (const char* bad : {"--moe.shared_experts=4", "--moe.shared_experts=-1"}) {
    auto cli = parse({"--train.steps=1", "--moe.granularity=4", bad});
    ValidationContext ctx;
    ctx.check_data_files = false;
    try {
      validate_config(cli.config, ctx);
      FAIL() << bad << ": no error";
    } catch (const InputError& e) {
      const std::string m = e.what();
      EXPECT_NE(m.find("moe.shared_experts"), std::string::npos) << m;
      EXPECT_NE(m.find("must be in [0, moe.granularity - 1 = 3]"), std::string::npos) << m;
    }
  }
  auto ok = parse({"--train.steps=1", "--moe.granularity=4", "--moe.shared_experts=3", "--moe.routing=token_choice"});
  ValidationContext ctx;
  ctx.check_data_files = false;
  EXPECT_NO_THROW(validate_config(ok.config, ctx));
}

TEST(Config, BiasBalancingWithExpertChoiceIsRefused) {
  ValidationContext ctx;
  ctx.check_data_files = false;
  auto bad = parse({"--train.steps=1", "--moe.routing=expert_choice", "--moe.balance=bias"});
  try {
    validate_config(bad.config, ctx);
    FAIL() << "no error";
  } catch (const InputError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("moe.balance = bias"), std::string::npos) << m;
    EXPECT_NE(m.find("token_choice only"), std::string::npos) << m;
  }
  auto rate = parse({"--train.steps=1", "--moe.routing=token_choice", "--moe.balance=bias", "--moe.bias_rate=0"});
  EXPECT_THROW(validate_config(rate.config, ctx), InputError);
  auto unknown = parse({"--train.steps=1", "--moe.routing=token_choice", "--moe.balance=sinkhorn"});
  EXPECT_THROW(validate_config(unknown.config, ctx), InputError);
  auto ok = parse({"--train.steps=1", "--moe.routing=token_choice", "--moe.balance=bias"});
  EXPECT_NO_THROW(validate_config(ok.config, ctx));
}

TEST(Config, ActivationIsOneOfTheFour) {
  ValidationContext ctx;
  ctx.check_data_files = false;
  for (const char* ok : {"relu", "gelu", "gelu_tanh", "swiglu"}) {
    auto cli = parse({"--train.steps=1", std::string("--model.activation=") + ok});
    EXPECT_NO_THROW(validate_config(cli.config, ctx)) << ok;
  }
  auto bad = parse({"--train.steps=1", "--model.activation=gelu_erf"});
  try {
    validate_config(bad.config, ctx);
    FAIL() << "no error";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("relu | gelu | gelu_tanh | swiglu"), std::string::npos) << e.what();
  }
  EXPECT_EQ(ffn_hidden_width(64, 4, "gelu_tanh"), 64);  // elementwise: not the gated width
}

TEST(Config, DefaultsAreValidApartFromData) {
  auto cli = parse({"--train.steps=1"});
  ValidationContext ctx;
  ctx.check_data_files = false;
  ctx.world_size = 1;
  EXPECT_NO_THROW(validate_config(cli.config, ctx));
}

TEST(Config, TotalStepsFromTokenBudget) {
  auto cli = parse({"--train.tokens=10000", "--train.batch_size=8", "--model.context=64"});
  EXPECT_EQ(cli.config.total_steps(), 20);  // ceil(10000 / 512)
}

}  // namespace
}  // namespace finemoe
