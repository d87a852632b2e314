// finemoe-sweep's library: sweep definitions, expansion (validation, duplicates, precedence),
// counts and cost against the paper's closed forms, manifests, allocation files, and the
// committed inputs/ sweeps.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "sweep/allocation.h"
#include "sweep/expand.h"
#include "sweep/manifest.h"
#include "sweep/sweep_definition.h"
#include "util/check.h"

namespace fs = std::filesystem;
using namespace finemoe;
using namespace finemoe::sweep;

namespace {

class SweepTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("finemoe_sweep_test_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    write("base.ini",
          "[model]\nd_model = 32\nn_blocks = 2\nn_heads = 2\ncontext = 16\nvocab = 256\n"
          "[moe]\nexpansion_rate = 4\ngranularity = 1\ngroup_size = 4\n"
          "[train]\nsteps = 10\nbatch_size = 8\neval_sequences = 8\n"
          "[data]\ntrain = nowhere/train\nval = nowhere/val\n"
          "[parallel]\nexpert_parallel = 2\n");
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string write(const std::string& name, const std::string& text) {
    const std::string path = (dir_ / name).string();
    std::ofstream(path) << text;
    return path;
  }
  SweepDefinition sweep(const std::string& body, int ranks = 2) {
    const std::string path = write("s.ini", "[sweep]\nname = t\nbase = base.ini\noutput = out/t\nranks = " +
                                                std::to_string(ranks) + "\n" + body);
    return read_sweep(path);
  }
  static ExpandOptions no_data() {
    ExpandOptions o;
    o.check_data_files = false;
    return o;
  }
  // The InputError message of f(), or "" when it does not throw.
  template <typename F>
  static std::string error_of(F f) {
    try {
      f();
    } catch (const InputError& e) {
      return e.what();
    }
    return "";
  }

  fs::path dir_;
};

TEST_F(SweepTest, CrossProductInAxisOrderWithLabelsAndOverrides) {
  const auto def = sweep(
      "[axis shape]\npoint = s32: model.d_model=32\npoint = s64: model.d_model=64 model.n_blocks=1\n"
      "[axis G]\nkey = moe.granularity\nvalues = 1 2 4\n");
  const SweepPlan plan = expand_sweep(def, no_data());
  ASSERT_EQ(plan.runs.size(), 6u);
  const char* names[] = {"s32-G1", "s32-G2", "s32-G4", "s64-G1", "s64-G2", "s64-G4"};
  for (size_t i = 0; i < 6; ++i) {
    EXPECT_EQ(plan.runs[i].name, names[i]);
    EXPECT_EQ(plan.runs[i].index, int(i));
    EXPECT_EQ(plan.runs[i].output_dir, "out/t/" + std::string(names[i]));
    EXPECT_EQ(plan.runs[i].params_path, "out/t/params/" + std::string(names[i]) + ".ini");
    EXPECT_EQ(plan.runs[i].config.output.dir, plan.runs[i].output_dir);
  }
  EXPECT_EQ(plan.runs[4].config.model.d_model, 64);
  EXPECT_EQ(plan.runs[4].config.model.n_blocks, 1);
  EXPECT_EQ(plan.runs[4].config.moe.granularity, 2);
  EXPECT_EQ(plan.runs[1].config.model.n_blocks, 2);  // from the base
  // The parameter file round-trips to the same configuration.
  EXPECT_NE(plan.runs[4].params_text.find("granularity = 2"), std::string::npos);
  EXPECT_NE(plan.runs[4].config.origin_of("moe.granularity").find("axis 'G', point 'G2'"), std::string::npos);
}

TEST_F(SweepTest, PrecedenceBaseAllocationSetAxesCommandLine) {
  const std::string alloc_path = write("a.ini",
                                       "[allocation]\ncores_per_node = 2\ntime_limit = 1:00:00\n"
                                       "[throughput]\nmodel_flops_per_s_per_rank = 1e9\n"
                                       "[parameters]\ntrain.lr = 0.5\ntrain.seed = 7\ntrain.beta1 = 0.8\n");
  const Allocation alloc = read_allocation(alloc_path);
  const auto def = sweep("set = train.seed=8\nset = train.lr=0.25\n[axis lr]\npoint = x: train.lr=0.125\n");
  ExpandOptions o = no_data();
  o.allocation = &alloc;
  SweepPlan plan = expand_sweep(def, o);
  EXPECT_EQ(plan.runs[0].config.train.beta1, 0.8);   // allocation over base
  EXPECT_EQ(plan.runs[0].config.train.seed, 8u);     // set over allocation
  EXPECT_EQ(plan.runs[0].config.train.lr, 0.125);    // axis over set
  o.cli_set = {{"train.lr", "0.0625"}};
  plan = expand_sweep(def, o);
  EXPECT_EQ(plan.runs[0].config.train.lr, 0.0625);   // --set last
}

TEST_F(SweepTest, DuplicatePointLabelNamesFileAxisAndPoint) {
  const std::string msg = error_of([&] { sweep("[axis G]\npoint = a: moe.granularity=2\npoint = a: moe.granularity=4\n"); });
  EXPECT_NE(msg.find("s.ini:"), std::string::npos) << msg;
  EXPECT_NE(msg.find("axis 'G'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("point 'a'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("duplicate"), std::string::npos) << msg;
}

TEST_F(SweepTest, PointsResolvingToTheSameParametersAreDuplicates) {
  const auto def = sweep("[axis G]\npoint = two: moe.granularity=2\npoint = also2: moe.granularity=2\n");
  const std::string msg = error_of([&] { expand_sweep(def, no_data()); });
  EXPECT_NE(msg.find("run 1 'also2'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("duplicates run 0 'two'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("G = also2"), std::string::npos) << msg;
}

TEST_F(SweepTest, DenseCrossedWithGranularityIsRejectedAsDuplicate) {
  const auto def = sweep("[axis ffn]\npoint = dense: moe.enabled=false\n[axis G]\nkey = moe.granularity\nvalues = 1 2\n");
  const std::string msg = error_of([&] { expand_sweep(def, no_data()); });
  EXPECT_NE(msg.find("'dense-G2'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("moe.* keys have no effect"), std::string::npos) << msg;
}

TEST_F(SweepTest, InvalidPointNamesSweepFileAxisPointAndKey) {
  const auto def = sweep("[axis G]\nkey = moe.granularity\nvalues = 1 3\n");
  const std::string msg = error_of([&] { expand_sweep(def, no_data()); });
  EXPECT_NE(msg.find("s.ini: run 1 'G3' (G = G3) is invalid"), std::string::npos) << msg;
  EXPECT_NE(msg.find("axis 'G', point 'G3'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("moe.granularity = 3"), std::string::npos) << msg;
  EXPECT_NE(msg.find("must divide d_ff"), std::string::npos) << msg;
}

TEST_F(SweepTest, UnknownKeyAndBadValueAreRejected) {
  auto def = sweep("[axis x]\npoint = p: moe.granularty=2\n");
  std::string msg = error_of([&] { expand_sweep(def, no_data()); });
  EXPECT_NE(msg.find("unknown key 'moe.granularty'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("did you mean 'moe.granularity'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("point 'p'"), std::string::npos) << msg;
  def = sweep("[axis x]\npoint = p: train.steps=many\n");
  msg = error_of([&] { expand_sweep(def, no_data()); });
  EXPECT_NE(msg.find("train.steps = 'many' is not a valid value"), std::string::npos) << msg;
}

TEST_F(SweepTest, LayoutIsCheckedAgainstTheRanksAndDataFilesWhenAsked) {
  std::string msg = error_of([&] { expand_sweep(sweep("", 3), no_data()); });
  EXPECT_NE(msg.find("must divide the world size 3"), std::string::npos) << msg;
  msg = error_of([&] { expand_sweep(sweep(""), ExpandOptions{}); });
  EXPECT_NE(msg.find("data.train"), std::string::npos) << msg;
}

TEST_F(SweepTest, CountsAndCostFollowThePaperFormulas) {
  const Allocation alloc = parse_allocation(
      "[allocation]\ngpus_per_node = 4\ncores_per_node = 32\ntime_limit = 2-00:00:00\n"
      "[throughput]\nmodel_flops_per_s_per_rank = 2.5e12\n",
      "alloc");
  const auto def = sweep(
      "[axis shape]\npoint = a: model.d_model=32 model.n_blocks=2\npoint = b: model.d_model=64 model.n_blocks=3\n"
      "[axis G]\nkey = moe.granularity\nvalues = 1 4\n[axis dense]\npoint = moe: moe.enabled=true\n",
      6);
  auto d6 = def;
  ExpandOptions o = no_data();
  o.allocation = &alloc;
  o.cli_set = {{"train.batch_size", "12"}, {"train.eval_sequences", "12"},
               {"train.steps", "0"}, {"train.tokens", "1000"}};
  const SweepPlan plan = expand_sweep(d6, o);
  ASSERT_EQ(plan.runs.size(), 4u);
  double total = 0, node_hours = 0;
  for (const auto& r : plan.runs) {
    const double d = r.config.model.d_model, nb = r.config.model.n_blocks, E = 4, G = r.config.moe.granularity;
    EXPECT_EQ(r.counts.n_total(), int64_t(d * d * (8 * E + 4) * nb)) << r.name;
    EXPECT_EQ(r.counts.n_active(), int64_t(12 * d * d * nb)) << r.name;
    // D: ceil(1000 / (12 x 16)) = 6 steps of 192 tokens.
    EXPECT_EQ(r.tokens, 6 * 192) << r.name;
    const double flops = (12 * d * d * 6 + d * E * G * 14) * nb * double(r.tokens);
    EXPECT_NEAR(r.flops, flops, 1e-9 * flops) << r.name;
    EXPECT_EQ(r.nodes, 2);  // 6 ranks, 4 per node
    EXPECT_NEAR(r.est_hours, flops / (2.5e12 * 6) / 3600, 1e-12);
    EXPECT_NEAR(r.est_node_hours, 2 * r.est_hours, 1e-15);
    total += r.flops;
    node_hours += r.est_node_hours;
  }
  EXPECT_NEAR(plan.total_flops, total, 1e-9 * total);
  EXPECT_NEAR(plan.total_node_hours, node_hours, 1e-12);
}

TEST_F(SweepTest, SelectNameFormatAndInvalidSelections) {
  const auto def = sweep("[axis shape]\npoint = a: model.d_model=32\npoint = b: model.d_model=64\n"
                         "[axis G]\nkey = moe.granularity\nvalues = 1 2 4\n");
  ExpandOptions o = no_data();
  o.select = {{"G", {"G4", "G1"}}};
  o.name_format = "{G}_{shape}";
  const SweepPlan plan = expand_sweep(def, o);
  ASSERT_EQ(plan.runs.size(), 4u);
  EXPECT_EQ(plan.runs[0].name, "G4_a");
  EXPECT_EQ(plan.runs[3].name, "G1_b");
  o.select = {{"H", {"x"}}};
  EXPECT_NE(error_of([&] { expand_sweep(def, o); }).find("there is no axis 'H'"), std::string::npos);
  o.select = {{"G", {"G8"}}};
  EXPECT_NE(error_of([&] { expand_sweep(def, o); }).find("has no point 'G8'"), std::string::npos);
  o.select.clear();
  o.name_format = "{shape}";
  EXPECT_NE(error_of([&] { expand_sweep(def, o); }).find("same name"), std::string::npos);
}

TEST_F(SweepTest, MalformedSweepFilesAreRejectedWithTheLine) {
  EXPECT_NE(error_of([&] { sweep("[axis G]\nvalues = 1 2\n"); }).find("needs a 'key"), std::string::npos);
  EXPECT_NE(error_of([&] { sweep("[axis G]\npoint = nocolon\n"); }).find("LABEL: key=value"), std::string::npos);
  EXPECT_NE(error_of([&] { sweep("[axis G]\npoint = a: granularity\n"); }).find("section.key=value"), std::string::npos);
  EXPECT_NE(error_of([&] { sweep("bogus = 1\n"); }).find("s.ini:6: unknown key 'bogus'"), std::string::npos);
  EXPECT_NE(error_of([&] { sweep("[axes G]\nkey = x\n"); }).find("unknown section [axes G]"), std::string::npos);
  EXPECT_NE(error_of([&] { parse_sweep("[sweep]\nbase = x.ini\n", "y.ini"); }).find("output is missing"),
            std::string::npos);
}

TEST_F(SweepTest, ManifestRoundTripsAndRejectsBadLines) {
  const Allocation alloc = parse_allocation(
      "[allocation]\ncores_per_node = 2\ntime_limit = 10\n[throughput]\nmodel_flops_per_s_per_rank = 1e9\n", "a");
  ExpandOptions o = no_data();
  o.allocation = &alloc;
  const SweepPlan plan = expand_sweep(sweep("[axis G]\nkey = moe.granularity\nvalues = 1 2\n"), o);
  const auto entries = parse_manifest(manifest_text(plan, &alloc), "m");
  ASSERT_EQ(entries.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(entries[i].index, int(i));
    EXPECT_EQ(entries[i].name, plan.runs[i].name);
    EXPECT_EQ(entries[i].params, plan.runs[i].params_path);
    EXPECT_EQ(entries[i].output_dir, plan.runs[i].output_dir);
    EXPECT_EQ(entries[i].ranks, 2);
    EXPECT_EQ(entries[i].n_total, plan.runs[i].counts.n_total());
    EXPECT_EQ(entries[i].tokens, plan.runs[i].tokens);
    EXPECT_NEAR(entries[i].flops, plan.runs[i].flops, 1e-5 * plan.runs[i].flops);
  }
  EXPECT_NE(error_of([] { parse_manifest("0 a b c 1\n", "m"); }).find("m:1: not a manifest line"), std::string::npos);
  EXPECT_NE(error_of([] { parse_manifest("1 a p o 1 1 1 1 1 1 1 1\n", "m"); }).find("index 1, expected 0"),
            std::string::npos);
}

TEST_F(SweepTest, ParameterFilesAreNotSilentlyReplaced) {
  ExpandOptions o = no_data();
  o.output = (dir_ / "out").string();
  const auto def = sweep("[axis G]\nkey = moe.granularity\nvalues = 1 2\n");
  EXPECT_EQ(write_parameter_files(expand_sweep(def, o), false), 2);
  EXPECT_EQ(write_parameter_files(expand_sweep(def, o), false), 0);  // same sweep again: reused
  o.cli_set = {{"train.lr", "0.001"}};
  const SweepPlan changed = expand_sweep(def, o);
  EXPECT_NE(error_of([&] { write_parameter_files(changed, false); }).find("exists with different parameters"),
            std::string::npos);
  EXPECT_EQ(write_parameter_files(changed, true), 2);
}

TEST(Allocation, ParsesAndChecks) {
  EXPECT_EQ(parse_slurm_time("30"), 1800);
  EXPECT_EQ(parse_slurm_time("30:15"), 1815);
  EXPECT_EQ(parse_slurm_time("24:00:00"), 86400);
  EXPECT_EQ(parse_slurm_time("2-12"), 2 * 86400 + 12 * 3600);
  EXPECT_EQ(parse_slurm_time("1-00:30:00"), 86400 + 1800);
  EXPECT_EQ(parse_slurm_time("abc"), -1);
  EXPECT_EQ(parse_slurm_time("1:2:3:4"), -1);
  const std::string ok = "[allocation]\ncores_per_node = 64\ngpus_per_node = 4\ntime_limit = 1:00:00\n"
                         "module = gcc/12\nmodule = cuda/12\n[throughput]\nmodel_flops_per_s_per_rank = 1e14\n";
  const Allocation a = parse_allocation(ok, "a.ini");
  EXPECT_EQ(a.ranks_per_node, 4);
  EXPECT_EQ(a.cpus_per_rank(), 16);
  EXPECT_EQ(a.modules.size(), 2u);
  EXPECT_NE(setup_script_text(a).find("module load cuda/12\n"), std::string::npos);
  auto err = [](const std::string& text) {
    try {
      parse_allocation(text, "a.ini");
    } catch (const InputError& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(err("[allocation]\ncores_per_node = 2\n[throughput]\nmodel_flops_per_s_per_rank = 1\n").find("time_limit is missing"),
            std::string::npos);
  EXPECT_NE(err(ok + "[allocation]\nlauncher = aprun\n").find("launcher = 'aprun' is invalid"), std::string::npos);
  EXPECT_NE(err(ok + "[allocation]\naccount = a;rm\n").find("account = 'a;rm' is invalid"), std::string::npos);
  EXPECT_NE(err(ok + "[allocation]\nranks_per_node = 8\n").find("one GPU per rank"), std::string::npos);
  EXPECT_NE(err(ok + "[throughput]\nmodel_flops_per_s_per_rank = -1\n").find("a number > 0"), std::string::npos);
  EXPECT_EQ(shell_quote("it's"), "'it'\\''s'");
}

// [hardware] and [sources] (issue 18): values parsed, every hardware fact needs a source line,
// sources must be 'URL verified YYYY-MM-DD' or 'unverified: note' and name a known fact.
TEST(Allocation, HardwareFactsNeedSources) {
  const std::string base = "[allocation]\ncores_per_node = 64\ngpus_per_node = 4\ntime_limit = 1:00:00\n"
                           "[throughput]\nmodel_flops_per_s_per_rank = 1e14\n";
  const std::string hw = "[hardware]\ngpu = A100-SXM4-40GB\ngpu_memory_gb = 40\nnvlink_gbps = 300\n";
  const std::string src = "[sources]\nhardware.gpu = https://x.org/a verified 2026-12-02\n"
                          "hardware.gpu_memory_gb = https://x.org/a verified 2026-12-02\n"
                          "hardware.nvlink_gbps = unverified: not read\n";
  const Allocation a = parse_allocation(base + hw + src, "a.ini");
  EXPECT_TRUE(a.hardware.present);
  EXPECT_EQ(a.hardware.gpu, "A100-SXM4-40GB");
  EXPECT_EQ(a.hardware.gpu_memory_gb, 40);
  EXPECT_EQ(a.hardware.nvlink_gbps, 300);
  ASSERT_NE(a.source_of("hardware.gpu_memory_gb"), nullptr);
  EXPECT_EQ(a.source_of("hardware.gpu_memory_gb")->verified_on, "2026-12-02");
  EXPECT_EQ(a.source_of("hardware.nvlink_gbps")->unverified, "not read");
  EXPECT_FALSE(parse_allocation(base, "a.ini").hardware.present);
  auto err = [](const std::string& text) {
    try {
      parse_allocation(text, "a.ini");
    } catch (const InputError& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(err(base + hw).find("[hardware] gpu has no [sources] line"), std::string::npos);
  EXPECT_NE(err(base + hw + src + "[hardware]\nnetwork_gbps = 25\n").find("network_gbps has no [sources]"),
            std::string::npos);
  EXPECT_NE(err(base + "[hardware]\ntflops = 3\n").find("unknown key 'tflops' in [hardware]"), std::string::npos);
  EXPECT_NE(err(base + "[hardware]\ngpu_memory_gb = -1\n").find("a number > 0"), std::string::npos);
  EXPECT_NE(err(base + "[sources]\nhardware.gpu = https://x.org verified yesterday\n").find("URL verified YYYY-MM-DD"),
            std::string::npos);
  EXPECT_NE(err(base + "[sources]\nhardware.gpu = x.org verified 2026-12-02\n").find("URL verified YYYY-MM-DD"),
            std::string::npos);
  EXPECT_NE(err(base + "[sources]\nhardware.colour = unverified: x\n").find("names no fact"), std::string::npos);
  EXPECT_NE(err(base + "[sources]\nallocation.partition = unverified:\n").find("needs a note"), std::string::npos);
}

// The committed sweeps expand on both committed allocations; the demo and tiny sweeps have the
// shapes the tests and the demo rely on.
TEST(CommittedInputs, EverySweepExpandsOnEveryAllocation) {
  const fs::path root = FINEMOE_SOURCE_DIR;
  const fs::path cwd = fs::current_path();
  fs::current_path(root);  // paths in the sweeps are relative to the checkout
  int sweeps = 0;
  for (const auto& s : fs::directory_iterator("inputs/sweeps")) {
    for (const auto& a : fs::directory_iterator("inputs/allocations")) {
      const Allocation alloc = read_allocation(a.path().string());
      ExpandOptions o;
      o.check_data_files = false;
      o.allocation = &alloc;
      SweepPlan plan;
      ASSERT_NO_THROW(plan = expand_sweep(read_sweep(s.path().string()), o)) << s.path() << " on " << a.path();
      EXPECT_GT(plan.total_node_hours, 0);
    }
    ++sweeps;
  }
  EXPECT_GE(sweeps, 3);
  ExpandOptions o;
  o.check_data_files = false;
  const SweepPlan tiny = expand_sweep(read_sweep("inputs/sweeps/tiny-cpu.ini"), o);
  EXPECT_GE(tiny.runs.size(), 8u);
  EXPECT_EQ(tiny.runs[0].ranks, 2);
  const SweepPlan demo = expand_sweep(read_sweep("inputs/sweeps/demo.ini"), o);
  std::set<int> sizes, granularities;
  std::set<int64_t> budgets;
  int dense = 0;
  for (const auto& r : demo.runs) {
    EXPECT_EQ(r.ranks, 2);
    EXPECT_EQ(r.config.parallel.expert_parallel, 2);
    sizes.insert(r.config.model.d_model);
    budgets.insert(r.tokens);
    if (r.config.moe.enabled) {
      granularities.insert(r.config.moe.granularity);
      EXPECT_TRUE(r.config.moe.expansion_rate == 8 || r.config.moe.expansion_rate == 16);
    } else {
      ++dense;
    }
  }
  EXPECT_GE(sizes.size(), 3u);
  EXPECT_GE(granularities.size(), 3u);
  EXPECT_GE(budgets.size(), 3u);
  EXPECT_GE(dense, int(sizes.size()));
  const SweepPlan paper = expand_sweep(read_sweep("inputs/sweeps/paper-e64.ini"), o);
  EXPECT_EQ(paper.runs.size(), 6u * 6u * 4u);
  for (const auto& r : paper.runs) {
    if (!r.config.moe.enabled) continue;
    EXPECT_EQ(r.config.moe.expansion_rate, 64);
    EXPECT_EQ(r.config.model.context, 256);
    EXPECT_EQ(r.config.model.vocab, 50257);
    EXPECT_EQ(r.config.train.batch_size, 2048);
    EXPECT_EQ(r.config.moe.group_size, 256);
    EXPECT_TRUE(r.config.moe.output_layernorm);
  }
  // 64x85M: 3.7B total parameters (paper-facts: 129M-3.7B).
  EXPECT_NEAR(double(paper.runs.back().counts.n_total()), 3.65e9, 0.01e9);
  fs::current_path(cwd);
}

}  // namespace
