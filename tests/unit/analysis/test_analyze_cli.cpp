// finemoe-analyze as a person runs it: files written, JSON, and exit code 2 with a message
// naming the problem for bad input.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "synthetic_records.h"

namespace finemoe::analysis {
namespace {

namespace fs = std::filesystem;

struct Outcome {
  int exit_code;
  std::string out, err;
};

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class AnalyzeCli : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = (fs::temp_directory_path() / ("finemoe_cli_" + std::to_string(getpid()) + "_" +
                                         ::testing::UnitTest::GetInstance()->current_test_info()->name()))
               .string();
    fs::remove_all(dir_);
    fs::create_directories(dir_ + "/records");
  }
  void TearDown() override { fs::remove_all(dir_); }
  Outcome analyze(const std::string& args) {
    const std::string cmd = std::string(FINEMOE_ANALYZE) + " " + args + " > " + dir_ + "/out.txt 2> " + dir_ + "/err.txt";
    const int status = std::system(cmd.c_str());
    return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, slurp(dir_ + "/out.txt"), slurp(dir_ + "/err.txt")};
  }
  std::string dir_;
};

TEST_F(AnalyzeCli, FitThenOptimalFromTheFitFile) {
  const LawCoefficients truth = law_preset("table1").moe;
  synthetic::write_grid(dir_ + "/records", truth, 0.0, 1);
  synthetic::write_grid(dir_ + "/records", law_preset("table1").dense, 0.0, 1);
  { std::ofstream(dir_ + "/records/broken.h5") << "x"; }
  Outcome fit = analyze("fit " + dir_ + "/records --bootstrap 8 --kfold 0 --json --out " + dir_ + "/fit");
  ASSERT_EQ(fit.exit_code, 0) << fit.err;
  EXPECT_NE(fit.out.find("\"law\": \"moe\""), std::string::npos) << fit.out;
  EXPECT_NE(fit.out.find("\"law\": \"dense\""), std::string::npos) << fit.out;
  EXPECT_NE(fit.out.find("\"state\": \"unreadable\""), std::string::npos) << fit.out;
  EXPECT_NE(fit.out.find("\"c_at_bound\": false"), std::string::npos) << fit.out;  // c = 0.47 is identified
  EXPECT_NE(fit.err.find("broken.h5"), std::string::npos) << fit.err;  // left out, never silently
  for (const char* f : {"fit.h5", "fit.csv", "fit_runs.csv", "observed_vs_predicted.svg", "loss_vs_N.svg",
                        "loss_vs_G.svg"}) {
    EXPECT_TRUE(fs::exists(dir_ + "/fit/" + f)) << f;
  }
  EXPECT_NE(slurp(dir_ + "/fit/fit.csv").find("moe,gamma,0.58"), std::string::npos);

  Outcome opt = analyze("optimal --fit " + dir_ + "/fit/fit.h5 --budgets 1e20,1e21 --out " + dir_ + "/opt");
  ASSERT_EQ(opt.exit_code, 0) << opt.err;
  EXPECT_NE(opt.out.find("bootstrap p10-p90"), std::string::npos) << opt.out;
  EXPECT_EQ(opt.out.find("EXTRAPOLATION"), std::string::npos) << opt.out;  // noise-free: identified
  for (const char* f : {"optimal.h5", "optimal.csv", "optimal_G.svg", "optimal_N_D.svg"}) {
    EXPECT_TRUE(fs::exists(dir_ + "/opt/" + f)) << f;
  }
  Outcome cmp = analyze("compare --fit " + dir_ + "/fit/fit.h5 --budgets 1e20 --json --out " + dir_ + "/cmp");
  ASSERT_EQ(cmp.exit_code, 0) << cmp.err;
  EXPECT_NE(cmp.out.find("\"multiplier\": 21."), std::string::npos) << cmp.out;  // the paper's ~20x
}

// One law with too few runs is skipped with a warning; the other is fitted (runtime ~2 s).
TEST_F(AnalyzeCli, ALawWithTooFewRunsIsSkippedAndTheOtherFitted) {
  synthetic::write_grid(dir_ + "/records", law_preset("table1").dense, 0.01, 1);
  for (int i = 0; i < 3; ++i) {
    synthetic::write_record(dir_ + "/records", "moe" + std::to_string(i), {256, 4}, 64, 1 << i, 16e9, 3.5 + i);
  }
  Outcome fit = analyze("fit " + dir_ + "/records --bootstrap 8 --kfold 0 --json --out " + dir_ + "/fit");
  ASSERT_EQ(fit.exit_code, 0) << fit.err;
  EXPECT_NE(fit.err.find("the MoE law is not fitted: 3 completed runs for 7 coefficients"), std::string::npos) << fit.err;
  EXPECT_NE(fit.out.find("\"law\": \"dense\""), std::string::npos) << fit.out;
  EXPECT_EQ(fit.out.find("\"law\": \"moe\""), std::string::npos) << fit.out;
}

// Issue 20: runs that differ in shared experts, a gated FFN or the balancing method are not fitted
// under one law unless --mix-variants (runtime ~2 s).
TEST_F(AnalyzeCli, RunsOfDifferentVariantsAreNotMixedUnlessTold) {
  for (int i = 0; i < 8; ++i) {
    std::vector<std::pair<std::string, std::string>> config;
    if (i % 2) config = {{"moe.shared_experts", "1"}, {"model.activation", "swiglu"}};
    synthetic::write_record(dir_ + "/records", "moe" + std::to_string(i), {256 + 64 * i, 4}, 64, 1 << (i % 4),
                            16e9 * (1 + i), 3.5 - 0.1 * i, config);
  }
  Outcome refused = analyze("fit " + dir_ + "/records --bootstrap 0 --kfold 0 --out " + dir_ + "/fit");
  EXPECT_EQ(refused.exit_code, 2) << refused.err;
  EXPECT_NE(refused.err.find("the MoE runs differ in options that change the model (2 variants)"), std::string::npos)
      << refused.err;
  EXPECT_NE(refused.err.find("moe.shared_experts=0 ffn=ungated  (e.g. "), std::string::npos) << refused.err;
  EXPECT_NE(refused.err.find("moe.shared_experts=1 ffn=swiglu  (e.g. "), std::string::npos) << refused.err;
  EXPECT_NE(refused.err.find("--mix-variants"), std::string::npos) << refused.err;
  Outcome mixed = analyze("fit " + dir_ + "/records --mix-variants --bootstrap 0 --kfold 0 --out " + dir_ + "/fit");
  EXPECT_EQ(mixed.err.find("differ in options"), std::string::npos) << mixed.err;
  EXPECT_EQ(mixed.exit_code, 0) << mixed.err;
}

TEST(RunVariant, RecordsWithoutTheNewKeysHaveTheirDefaults) {
  EXPECT_EQ(run_variant({}, true), "moe.shared_experts=0 ffn=ungated");
  EXPECT_EQ(run_variant({{"model.activation", "gelu"}}, false), "ffn=ungated");
  EXPECT_EQ(run_variant({{"moe.routing", "token_choice"}}, true), "moe.shared_experts=0 ffn=ungated moe.balance=aux_loss");
  EXPECT_EQ(run_variant({{"moe.routing", "token_choice"}, {"moe.balance", "bias"}, {"moe.shared_experts", "2"}}, true),
            "moe.shared_experts=2 ffn=ungated moe.balance=bias");
}

TEST_F(AnalyzeCli, BadInputExitsWithCodeTwoAndSaysWhy) {
  for (int i = 0; i < 3; ++i) {
    synthetic::write_record(dir_ + "/records", "r" + std::to_string(i), {256, 4}, 64, 1 << i, 16e9, 3.5 + i);
  }
  Outcome few = analyze("fit " + dir_ + "/records --out " + dir_ + "/o");
  EXPECT_EQ(few.exit_code, 2);
  EXPECT_NE(few.err.find("3 completed runs and 7 coefficients"), std::string::npos) << few.err;

  Outcome missing = analyze("fit " + dir_ + "/nope/*.h5 --out " + dir_ + "/o");
  EXPECT_EQ(missing.exit_code, 2);
  EXPECT_NE(missing.err.find("nope"), std::string::npos) << missing.err;

  Outcome small = analyze("optimal --budgets 1e9 --out " + dir_ + "/o");
  EXPECT_EQ(small.exit_code, 2);
  EXPECT_NE(small.err.find("too small for any model"), std::string::npos) << small.err;

  Outcome preset = analyze("optimal --coefficients table9 --out " + dir_ + "/o");
  EXPECT_EQ(preset.exit_code, 2);
  EXPECT_NE(preset.err.find("table9"), std::string::npos) << preset.err;

  Outcome not_fit = analyze("optimal --fit " + dir_ + "/records/r0.h5 --out " + dir_ + "/o");
  EXPECT_EQ(not_fit.exit_code, 2);
  EXPECT_NE(not_fit.err.find("not a fit file"), std::string::npos) << not_fit.err;

  Outcome levels = analyze("fit " + dir_ + "/records --start-levels 4 --out " + dir_ + "/o");
  EXPECT_EQ(levels.exit_code, 2);
  EXPECT_NE(levels.err.find("--start-levels 2 or 3"), std::string::npos) << levels.err;

  Outcome command = analyze("plot");
  EXPECT_EQ(command.exit_code, 2);
}

}  // namespace
}  // namespace finemoe::analysis
