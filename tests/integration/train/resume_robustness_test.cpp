// finemoe-train's answers to runs left in odd states (issue 19), each checked against the
// uninterrupted run or the files as they were:
//   - a kill during the first checkpoint write (only step_N.tmp left) or during a re-save: --resume
//     starts over or restores; all checkpoints damaged: exit 2 that says so, not "use --resume";
//   - a kill after the final checkpoint but before completion: --resume completes with the final
//     evaluation of the uninterrupted run, never NaN;
//   - --resume with a key a resume cannot change: exit 2 on every rank, one message naming the
//     key; a change of the EP x DP layout is allowed;
//   - a manifest with a valid CRC but an absurd segment offset: the previous checkpoint is used;
//   - files in output.dir that are not a record of this run are never replaced.
#include <gtest/gtest.h>
#include <zlib.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <regex>
#include <string>
#include <vector>

#include "data/shard.h"
#include "io/h5.h"
#include "io/run_record.h"
#include "train_job.h"

namespace finemoe {
namespace {

using namespace finemoe::test_support;

class ResumeRobustness : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char* kv : {"OMPI_ALLOW_RUN_AS_ROOT=1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1", "OMP_NUM_THREADS=1",
                           "OPENBLAS_NUM_THREADS=1", "OMP_WAIT_POLICY=passive"}) {
      const std::string s(kv);
      ::setenv(s.substr(0, s.find('=')).c_str(), s.substr(s.find('=') + 1).c_str(), 0);
    }
    dir_ = fs::path(::testing::TempDir()) /
           ("finemoe_rr_" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()) + "_" +
            std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "data");
    std::vector<uint16_t> tokens(8192);
    for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = uint16_t((i * 7 + i / 13) % 64);
    write_shard((dir_ / "data" / "train.bin").string(), tokens.data(), tokens.size());
    write_shard((dir_ / "data" / "val.bin").string(), tokens.data(), 2048);
    std::ofstream(dir_ / "tiny.ini") << "[model]\nd_model = 16\nn_blocks = 2\nn_heads = 2\ncontext = 16\nvocab = 64\n"
                                        "[moe]\nexpansion_rate = 4\ngranularity = 2\nrouting = token_choice\n"
                                        "top_k = 1\ngroup_size = 4\n"
                                        "[train]\nprecision = fp64\nseed = 3\nsteps = 8\nbatch_size = 8\n"
                                        "lr = 1e-2\nfinal_lr = 1e-3\neval_interval = 4\neval_sequences = 8\nthreads = 1\n"
                                        "[data]\ntrain = " << (dir_ / "data" / "train.bin").string()
                                     << "\nval = " << (dir_ / "data" / "val.bin").string()
                                     << "\n[parallel]\nexpert_parallel = 1\n"
                                        "[output]\nlog_interval = 1\ncheckpoint_interval = 4\nkeep_checkpoints = 2\n";
  }
  void TearDown() override {
    if (!HasFailure()) fs::remove_all(dir_);
    else std::printf("kept %s for inspection\n", dir_.c_str());
  }

  std::string tiny(const std::string& run, const std::string& extra = "") const {
    return (dir_ / "tiny.ini").string() + " --output.dir=" + (dir_ / run).string() + " " + extra;
  }
  Result run(const std::string& args, int ranks = 1) {
    Job job(args, ranks, dir_ / "last.log", 120);
    Result r;
    r.exit_code = job.wait();
    r.output = job.output();
    return r;
  }
  // Exit 2 with one "finemoe-train: error" line (one rank reports) holding every fragment.
  static void expect_input_error(const Result& r, const std::vector<std::string>& fragments) {
    EXPECT_EQ(r.exit_code, 2) << r.output;
    for (const auto& f : fragments) EXPECT_NE(r.output.find(f), std::string::npos) << "no '" << f << "' in\n" << r.output;
    const std::regex line("finemoe-train: error");
    EXPECT_EQ(std::distance(std::sregex_iterator(r.output.begin(), r.output.end(), line), std::sregex_iterator()), 1)
        << r.output;
    EXPECT_EQ(r.output.find("MPI_ABORT"), std::string::npos) << r.output;
    EXPECT_EQ(r.output.find("fatal"), std::string::npos) << r.output;
  }
  fs::path dir_;
};

std::vector<double> losses(const RunRecordReader& r) {
  std::vector<double> out;
  for (const auto& row : r.train()) out.push_back(row.loss);
  return out;
}

TEST_F(ResumeRobustness, OnlyTemporaryCheckpointsMeanStartingOver) {
  ASSERT_EQ(run(tiny("straight")).exit_code, 0);
  ASSERT_EQ(run(tiny("r", "--train.stop_after=4")).exit_code, 75);
  fs::rename(dir_ / "r" / "checkpoints" / "step_4", dir_ / "r" / "checkpoints" / "step_4.tmp");
  const Result r = run(tiny("r", "--resume"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_FALSE(fs::exists(dir_ / "r" / "checkpoints" / "step_4.tmp"));
  RunRecordReader a((dir_ / "straight" / "record.h5").string()), b((dir_ / "r" / "record.h5").string());
  EXPECT_EQ(b.check().state, RecordState::completed) << b.check().reason;
  EXPECT_EQ(losses(a), losses(b)) << "a fresh start is the straight run";
}

TEST_F(ResumeRobustness, InterruptedResaveIsRestored) {
  ASSERT_EQ(run(tiny("straight")).exit_code, 0);
  ASSERT_EQ(run(tiny("r", "--train.stop_after=4")).exit_code, 75);
  // Killed between "step_4 -> step_4.replaced.tmp" and "step_4.tmp -> step_4".
  fs::rename(dir_ / "r" / "checkpoints" / "step_4", dir_ / "r" / "checkpoints" / "step_4.replaced.tmp");
  fs::create_directory(dir_ / "r" / "checkpoints" / "step_4.tmp");
  // A fresh start must not take the only copy of step_4 for a leftover.
  const Result fresh = run(tiny("r", "--quiet"));
  expect_input_error(fresh, {"holds checkpoints of an earlier run"});
  const Result r = run(tiny("r", "--resume"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  RunRecordReader a((dir_ / "straight" / "record.h5").string()), b((dir_ / "r" / "record.h5").string());
  EXPECT_EQ(b.resume_count(), 1) << "resumed from the restored step_4";
  EXPECT_EQ(losses(a), losses(b));
}

TEST_F(ResumeRobustness, NoUsableCheckpointIsAnInputErrorThatSaysSo) {
  ASSERT_EQ(run(tiny("r", "--train.stop_after=4")).exit_code, 75);
  std::ofstream(dir_ / "r" / "checkpoints" / "step_4" / "manifest.txt", std::ios::app) << "junk\n";
  const std::string record = read_text(dir_ / "r" / "record.h5");
  const Result r = run(tiny("r", "--resume"));
  expect_input_error(r, {"none of its checkpoints is usable", "step_4 rejected", "output.overwrite = true"});
  EXPECT_EQ(r.output.find("continue it with --resume"), std::string::npos) << r.output;
  EXPECT_TRUE(read_text(dir_ / "r" / "record.h5") == record);
}

// Killed after the final checkpoint, before the record was completed.
TEST_F(ResumeRobustness, ResumeAtTheFinalCheckpointCompletesWithTheFinalEvaluation) {
  ASSERT_EQ(run(tiny("straight")).exit_code, 0);
  const RunRecordReader straight((dir_ / "straight" / "record.h5").string());
  const double final_eval = straight.final_values()->eval_loss;
  ASSERT_TRUE(std::isfinite(final_eval));
  for (const bool eval_logged : {true, false}) {
    SCOPED_TRACE(eval_logged ? "final eval row logged" : "final eval row missing");
    const std::string name = eval_logged ? "a" : "b";
    fs::copy(dir_ / "straight", dir_ / name, fs::copy_options::recursive);
    {
      h5::File f = h5::File::open((dir_ / name / "record.h5").string(), true);
      f.set("status", "running");
      f.remove_child("final");
      if (!eval_logged)  // as if killed before the final evaluation's append
        for (const char* series : {"step", "tokens", "loss"}) f.open_group("eval").open_series(series).resize(1);
      f.flush();
    }
    const Result r = run(tiny(name, "--resume"));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    RunRecordReader rec((dir_ / name / "record.h5").string());
    EXPECT_EQ(rec.check().state, RecordState::completed) << rec.check().reason;
    ASSERT_TRUE(rec.final_values());
    EXPECT_EQ(rec.final_values()->eval_loss, final_eval) << "the uninterrupted run's final evaluation";
    EXPECT_EQ(losses(rec), losses(straight));
    ASSERT_FALSE(rec.eval().empty());
    EXPECT_EQ(rec.eval().back().step, 8);
    EXPECT_EQ(rec.eval().back().loss, final_eval);
  }
}

TEST_F(ResumeRobustness, KeysAResumeCannotChangeAreRefusedOnEveryRank) {
  const std::string ep2 = "--parallel.expert_parallel=2";
  ASSERT_EQ(run(tiny("r", ep2 + " --train.stop_after=4"), 2).exit_code, 75);
  const fs::path ck = dir_ / "r" / "checkpoints";
  const std::string manifest = read_text(ck / "step_4" / "manifest.txt");
  for (const std::string change : {"train.seed=7", "model.d_model=32", "model.n_blocks=3", "moe.expansion_rate=2",
                                   "moe.granularity=4", "moe.routing=expert_choice", "train.batch_size=16 --train.eval_sequences=16",
                                   "model.context=8", "train.lr=0.02", "train.precision=fp32"}) {
    SCOPED_TRACE(change);
    const std::string key = change.substr(0, change.find('='));
    const Result r = run(tiny("r", ep2 + " --quiet --resume --" + change), 2);
    expect_input_error(r, {"cannot resume", key, "a resume cannot change " + key});
  }
  EXPECT_TRUE(read_text(ck / "step_4" / "manifest.txt") == manifest) << "a refused resume changed the checkpoint";
  // Another EP x DP layout of the same run: allowed (EP 2 x DP 1 -> EP 1 x DP 2).
  const Result relayout = run(tiny("r", "--parallel.expert_parallel=1 --resume"), 2);
  EXPECT_EQ(relayout.exit_code, 0) << relayout.output;
}

// Rewrites a manifest line and its CRC (the final line), as a damaged but self-consistent file.
void rewrite_manifest(const fs::path& path, const std::string& from, const std::string& to) {
  std::string text = read_text(path);
  const auto pos = text.find(from);
  ASSERT_NE(pos, std::string::npos) << from;
  text.replace(pos, from.size(), to);
  const auto crc_pos = text.rfind("\nmanifest_crc32 ");
  const std::string body = text.substr(0, crc_pos + 1);
  char crc[16];
  std::snprintf(crc, sizeof crc, "%08lx", crc32(0L, reinterpret_cast<const Bytef*>(body.data()), uInt(body.size())));
  std::ofstream(path, std::ios::trunc) << body << "manifest_crc32 " << crc << "\n";
}

TEST_F(ResumeRobustness, SegmentOffsetNearTwoToThe63FallsBackToThePreviousCheckpoint) {
  ASSERT_EQ(run(tiny("straight")).exit_code, 0);
  ASSERT_EQ(run(tiny("r", "--train.stop_after=6 --output.checkpoint_interval=2")).exit_code, 75);
  const fs::path m = dir_ / "r" / "checkpoints" / "step_6" / "manifest.txt";
  const std::string text = read_text(m);
  const std::regex segment("segment replicated.bin (\\S+) 0 1 (\\d+)\n");
  std::smatch match;
  ASSERT_TRUE(std::regex_search(text, match, segment));
  rewrite_manifest(m, match.str(0), "segment replicated.bin " + match.str(1) + " 0 1 9223372036854775800\n");
  const Result r = run(tiny("r", "--resume --output.checkpoint_interval=2"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("step_6 rejected"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("lies outside replicated.bin"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("resumed from checkpoint at step 4"), std::string::npos) << r.output;
  EXPECT_EQ(losses(RunRecordReader((dir_ / "r" / "record.h5").string())),
            losses(RunRecordReader((dir_ / "straight" / "record.h5").string())));
}

TEST_F(ResumeRobustness, FilesThatAreNotThisRunsRecordAreKept) {
  ASSERT_EQ(run(tiny("done")).exit_code, 0);
  const std::string completed = read_text(dir_ / "done" / "record.h5");
  struct Case {
    std::string name, bytes;
  };
  std::vector<Case> cases = {{"text", "my notes, not a record\n"},
                             {"truncated", completed.substr(0, completed.size() / 2)}};
  {
    fs::create_directories(dir_ / "h5");
    h5::File::create((dir_ / "h5" / "record.h5").string()).set("owner", "somebody else");
    cases.push_back({"hdf5", read_text(dir_ / "h5" / "record.h5")});
  }
  for (const auto& c : cases) {
    for (const char* overwrite : {"false", "true"}) {
      SCOPED_TRACE(c.name + std::string(", output.overwrite = ") + overwrite);
      const fs::path out = dir_ / ("user_" + c.name);
      fs::create_directories(out);
      std::ofstream(out / "record.h5", std::ios::binary | std::ios::trunc) << c.bytes;
      const Result r = run(tiny(out.filename().string(), std::string("--output.overwrite=") + overwrite));
      expect_input_error(r, {(out / "record.h5").string(), "is not a run record"});
      EXPECT_TRUE(read_text(out / "record.h5") == c.bytes) << "the user's file changed";
    }
  }
}

}  // namespace
}  // namespace finemoe
