// finemoe-analyze as a person runs it: files written, JSON, and exit code 2 with a message
// naming the problem for bad input.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "joint_law.h"
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

// fit --law joint over records of several E (the per-E fit refuses them), then optimal from the
// fit file; records at one E are refused with exit 2 (runtime ~2 s).
TEST_F(AnalyzeCli, JointFitOverSeveralEThenOptimalOverE) {
  const JointLaw truth =
      JointLaw::from_values(true, {18.1, -0.05, -0.115, -0.004, 30.8, -0.1, -0.147, 0.003, 2.1, 0.58, 0.47});
  int n = 0;
  for (const auto& s : synthetic::paper_shapes()) {
    for (int64_t E : {0, 4, 16, 64}) {
      for (int64_t G : E > 0 ? std::vector<int64_t>{1, 4, 16} : std::vector<int64_t>{1}) {
        for (double D : synthetic::wide_token_budgets()) {
          const double n_active = 12.0 * double(s.d_model * s.d_model * s.n_blocks);
          synthetic::write_record(dir_ + "/records", "r" + std::to_string(n++), s, E, G, D,
                                  truth.predict(n_active, D, E > 0 ? double(E) : 1, double(G)));
        }
      }
    }
  }
  Outcome mixed = analyze("fit " + dir_ + "/records --bootstrap 0 --kfold 0 --out " + dir_ + "/per_e");
  EXPECT_EQ(mixed.exit_code, 2);
  EXPECT_NE(mixed.err.find("different E"), std::string::npos) << mixed.err;
  Outcome fit = analyze("fit " + dir_ + "/records --law joint --bootstrap 8 --out " + dir_ + "/fit");
  ASSERT_EQ(fit.exit_code, 0) << fit.err;
  EXPECT_NE(fit.out.find("4 values of E, 3 of G"), std::string::npos) << fit.out;
  const std::string csv = slurp(dir_ + "/fit/joint_fit.csv");
  const std::size_t at = csv.find("coefficient,kappa,");
  ASSERT_NE(at, std::string::npos) << csv;
  EXPECT_NEAR(std::stod(csv.substr(at + 18)), 0.58, 1e-9) << csv;  // recovered through the records
  Outcome opt = analyze("optimal --law joint --fit " + dir_ + "/fit/joint_fit.csv --budgets 1e20 --max-e 64 "
                        "--memory-per-gpu-gb 80 --gpus 8 --out " + dir_ + "/opt");
  ASSERT_EQ(opt.exit_code, 0) << opt.err;
  EXPECT_NE(opt.out.find("compute-optimal configurations over E and G"), std::string::npos) << opt.out;
  EXPECT_NE(opt.out.find("at most 4e+10 total parameters"), std::string::npos) << opt.out;
  EXPECT_TRUE(fs::exists(dir_ + "/opt/joint_optimal.csv"));
  fs::remove_all(dir_ + "/records");
  fs::create_directories(dir_ + "/records");
  for (int i = 0; i < 12; ++i) {
    synthetic::write_record(dir_ + "/records", "e64_" + std::to_string(i), synthetic::paper_shapes()[i % 6], 64,
                            1 << (i % 3), 16e9 * (1 + i), 3.0 - 0.05 * i);
  }
  Outcome one_e = analyze("fit " + dir_ + "/records --law joint --bootstrap 0 --out " + dir_ + "/o");
  EXPECT_EQ(one_e.exit_code, 2);
  EXPECT_NE(one_e.err.find("at least two expansion rates"), std::string::npos) << one_e.err;
}

// plan at the budget of Table 2's 64x1B row on the generic H100 node (issue 18): the FLOPs
// optimum is the paper's row (G 16, N_active ~1B, D ~28.9B: Table 2 is the independent check),
// the wall-clock optimum at the same GPU-hours predicts a loss no worse, the sweep it writes
// expands, and an unidentified law is printed as an extrapolation (runtime < 1 s).
TEST_F(AnalyzeCli, PlanPrintsBothOptimaAndWritesASweepThatExpands) {
  const std::string alloc = std::string(FINEMOE_SOURCE_DIR) + "/inputs/allocations/generic-8xh100-ndr.ini";
  const std::string base = std::string(FINEMOE_SOURCE_DIR) + "/inputs/paper/base.ini";
  Outcome plan = analyze("plan --allocation " + alloc + " --flops 1.93e20 --base " + base + " --out " + dir_ + "/plan");
  ASSERT_EQ(plan.exit_code, 0) << plan.err << plan.out;
  const auto number_after = [&](const std::string& text, const std::string& key, std::size_t from) {
    const std::size_t at = text.find(key, from);
    EXPECT_NE(at, std::string::npos) << key << " in " << text;
    return at == std::string::npos ? 0.0 : std::stod(text.substr(at + key.size()));
  };
  const std::size_t wall = plan.out.find("wall-clock optimum"), flops = plan.out.find("FLOPs optimum at");
  ASSERT_NE(wall, std::string::npos) << plan.out;
  ASSERT_NE(flops, std::string::npos) << plan.out;
  EXPECT_EQ(number_after(plan.out, "G ", flops), 16);
  EXPECT_NEAR(number_after(plan.out, "N_active ", flops), 1e9, 0.05e9);
  EXPECT_NEAR(number_after(plan.out, "D ", flops), 28.94e9, 0.05 * 28.94e9);
  EXPECT_LE(number_after(plan.out, "; predicted loss ", wall), number_after(plan.out, "; predicted loss ", flops));
  EXPECT_NE(plan.out.find("why they differ:"), std::string::npos);
  EXPECT_NE(plan.out.find("glennklockwood.com/garden/processors/h100"), std::string::npos);  // provenance
  EXPECT_NE(plan.out.find("documented default"), std::string::npos);
  EXPECT_EQ(plan.out.find("EXTRAPOLATION"), std::string::npos);
  const std::string sweep = dir_ + "/plan/plan-sweep.ini";
  ASSERT_TRUE(fs::exists(sweep));
  ASSERT_TRUE(fs::exists(dir_ + "/plan/plan.ini"));
  const std::string cmd = std::string(FINEMOE_SWEEP) + " expand " + sweep + " --allocation " + alloc +
                          " --no-data-check --check -q > /dev/null 2>&1";
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;

  // An unidentified joint fit: the plan is marked as an extrapolation.
  fs::create_directories(dir_ + "/fit");
  std::ofstream(dir_ + "/fit/joint_fit.csv")
      << "kind,name,value,p10,p90\nmeta,form,published,,\nmeta,e_start,1,,\nmeta,e_max,inf,,\nmeta,identified,0,,\n"
         "coefficient,a,18.1,,\ncoefficient,delta,-0.05,,\ncoefficient,alpha,-0.115,,\ncoefficient,gamma,-0.004,,\n"
         "coefficient,b,30.8,,\ncoefficient,omega,-0.1,,\ncoefficient,beta,-0.147,,\ncoefficient,zeta,0.003,,\n"
         "coefficient,c,0.47,,\n";
  Outcome joint = analyze("plan --law joint --fit " + dir_ + "/fit/joint_fit.csv --allocation " + alloc +
                          " --nodes 2 --hours 24 --base " + base + " --out " + dir_ + "/plan2");
  ASSERT_EQ(joint.exit_code, 0) << joint.err << joint.out;
  EXPECT_NE(joint.out.find("EXTRAPOLATION"), std::string::npos) << joint.out;
  EXPECT_NE(joint.out.find("384 GPU-hours on 2 node(s)"), std::string::npos) << joint.out;

  Outcome two_budgets = analyze("plan --allocation " + alloc + " --flops 1e20 --gpu-hours 5 --out " + dir_ + "/x");
  EXPECT_EQ(two_budgets.exit_code, 2);
  EXPECT_NE(two_budgets.err.find("give one budget"), std::string::npos) << two_budgets.err;
  Outcome no_alloc = analyze("plan --gpu-hours 5 --out " + dir_ + "/x");
  EXPECT_EQ(no_alloc.exit_code, 2);
  EXPECT_NE(no_alloc.err.find("--allocation FILE is required"), std::string::npos) << no_alloc.err;
}

// next on a deliberately poor grid (two small shapes, G in {1, 2}, four token budgets, 1% noise):
// the proposal stays within the budget, picks each run once, predicts a smaller sd(log2 G*), and
// writes a sweep that finemoe-sweep expand accepts (runtime ~3 s).
TEST_F(AnalyzeCli, NextProposesRunsWithinTheBudgetAsASweepThatExpands) {
  const LawCoefficients truth = law_preset("table1").moe;
  int n = 0;
  for (const auto& s : {synthetic::Shape{256, 4}, synthetic::Shape{384, 4}}) {
    for (int64_t G : {1, 2}) {
      for (double D : {4e9, 8e9, 16e9, 32e9}) {
        const double loss = truth.predict(double(synthetic::total_params(s, 64)), D, double(G)) *
                            (1 + 0.01 * synthetic::normal(7, uint64_t(n)));
        synthetic::write_record(dir_ + "/records", "r" + std::to_string(n++), s, 64, G, D, loss);
      }
    }
  }
  const std::string base = std::string(FINEMOE_SOURCE_DIR) + "/inputs/paper/base.ini";
  Outcome next = analyze("next " + dir_ + "/records --budget 2e19 --target 1.93e20 --bootstrap 10 --base " + base +
                         " --out " + dir_ + "/next");
  ASSERT_EQ(next.exit_code, 0) << next.err << next.out;
  std::printf("%s", next.out.c_str());
  const std::size_t spent = next.out.find(" runs, ");
  ASSERT_NE(spent, std::string::npos) << next.out;
  EXPECT_LE(std::stod(next.out.substr(spent + 7)), 2e19);
  const std::size_t sd = next.out.find("sd(log2 G*) ");
  ASSERT_NE(sd, std::string::npos) << next.out;
  const double before = std::stod(next.out.substr(sd + 12));
  const double after = std::stod(next.out.substr(next.out.find("-> ", sd) + 3));
  EXPECT_LT(after, before);
  const std::string sweep = dir_ + "/next/next-sweep.ini";
  const std::string cmd = std::string(FINEMOE_SWEEP) + " expand " + sweep + " --no-data-check --check -q > /dev/null 2>&1";
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
  Outcome no_budget = analyze("next " + dir_ + "/records --target 1e20 --out " + dir_ + "/x");
  EXPECT_EQ(no_budget.exit_code, 2);
  EXPECT_NE(no_budget.err.find("--budget and --target are required"), std::string::npos) << no_budget.err;
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
