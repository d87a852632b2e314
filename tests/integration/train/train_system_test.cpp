// System-level guarantees of finemoe-train, run as a user runs it (mpiexec, parameter files,
// synthetic token shards written with src/data/shard.h):
//   - inputs/cpu-tiny.ini trains on 2 and 4 ranks, and both agree;
//   - resume (issue 6): 40 steps straight == 20 + resume + 20 bit for bit (record losses and the
//     final checkpoint's files), and a 2 -> 4 rank re-layout within 1e-10 in fp64;
//   - crash: SIGKILL mid-run leaves a record that opens, lists its steps and is incomplete (and
//     h5dump reads); --resume completes it; damaged newest checkpoints are rejected with a clear
//     message and the previous good one is used; a completed record is not overwritten unless
//     output.overwrite = true;
//   - faults (issue 4): a non-finite loss ends every rank promptly naming rank and cause; a rank
//     that stalls is reported by the watchdog (parallel.watchdog_s), naming the missing rank, and
//     the job ends within bounded time.
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "data/shard.h"
#include "io/run_record.h"
#include "train_job.h"
#include "util/rng.h"

namespace finemoe {
namespace {

namespace fs = std::filesystem;
using namespace finemoe::test_support;

// A tiny MoE run's parameter file (fp64 unless overridden) over synthetic shards.
class TrainSystem : public ::testing::Test {
 protected:
  void SetUp() override {
    // For the spawned jobs (ctest's ENVIRONMENT from gtest_discover_tests keeps only its first
    // entry with CMake 3.25). Values already set win.
    for (const char* kv : {"OMPI_ALLOW_RUN_AS_ROOT=1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1", "OMP_NUM_THREADS=1",
                           "OPENBLAS_NUM_THREADS=1", "OMP_WAIT_POLICY=passive"}) {
      const std::string s(kv);
      const auto eq = s.find('=');
      ::setenv(s.substr(0, eq).c_str(), s.substr(eq + 1).c_str(), 0);
    }
    dir_ = fs::path(::testing::TempDir()) /
           ("finemoe_sys_" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()) + "_" +
            std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "data");
    write_tokens(dir_ / "data" / "train.bin", 1, 16384);
    write_tokens(dir_ / "data" / "val.bin", 2, 4096);
    std::ofstream(dir_ / "tiny.ini") << "[model]\nd_model = 16\nn_blocks = 2\nn_heads = 2\ncontext = 16\nvocab = 64\n"
                                        "[moe]\nexpansion_rate = 4\ngranularity = 2\nrouting = token_choice\n"
                                        "top_k = 1\ncapacity_factor = 1.0\ngroup_size = 4\n"
                                        "[train]\nprecision = fp64\nseed = 3\nsteps = 40\nbatch_size = 8\n"
                                        "lr = 1e-2\nfinal_lr = 1e-3\nwarmup_fraction = 0.1\neval_interval = 10\n"
                                        "eval_sequences = 8\nthreads = 1\n"
                                        "[data]\ntrain = " << (dir_ / "data" / "train.bin").string()
                                     << "\nval = " << (dir_ / "data" / "val.bin").string()
                                     << "\n[parallel]\nexpert_parallel = 2\n"
                                        "[output]\nlog_interval = 1\nkeep_checkpoints = 2\n";
  }
  void TearDown() override {
    if (!HasFailure()) fs::remove_all(dir_);
    else std::printf("kept %s for inspection\n", dir_.c_str());
  }

  // A noisy affine recurrence over 64 tokens: something to learn.
  static void write_tokens(const fs::path& path, uint64_t key, size_t n) {
    std::vector<uint16_t> tokens(n);
    uint32_t t = 1;
    for (size_t i = 0; i < n; ++i) {
      const double u = uniform_open(key, i);
      t = u < 0.2 ? uint32_t(u * 5 * 64) % 64 : (7 * t + 5) % 64;
      tokens[i] = uint16_t(t);
    }
    write_shard(path.string(), tokens.data(), tokens.size());
  }

  std::string tiny(const std::string& run, const std::string& extra = "") const {
    return (dir_ / "tiny.ini").string() + " --output.dir=" + (dir_ / run).string() + " " + extra;
  }

  Result run(const std::string& args, int ranks, int timeout_s = 120) {
    Job job(args, ranks, dir_ / "last.log", timeout_s);
    Result r;
    r.exit_code = job.wait();
    r.seconds = job.elapsed();
    r.output = job.output();
    return r;
  }

  fs::path dir_;
};

std::vector<double> losses(const std::vector<TrainRow>& rows) {
  std::vector<double> out;
  for (const auto& r : rows) out.push_back(r.loss);
  return out;
}
std::vector<int64_t> steps(const std::vector<TrainRow>& rows) {
  std::vector<int64_t> out;
  for (const auto& r : rows) out.push_back(r.step);
  return out;
}
std::vector<int64_t> range(int64_t first, int64_t last) {
  std::vector<int64_t> out;
  for (int64_t s = first; s <= last; ++s) out.push_back(s);
  return out;
}

// Parameter values of a checkpoint by tensor name, experts in global order, read from the files
// as docs/checkpoints.md describes (independently of the checkpoint library).
std::map<std::string, std::vector<double>> read_checkpoint(const fs::path& dir) {
  std::map<std::string, std::vector<double>> out;
  std::map<std::string, int64_t> per_expert;
  std::istringstream manifest(read_text(dir / "manifest.txt"));
  std::vector<std::vector<std::string>> segments;
  for (std::string line; std::getline(manifest, line);) {
    std::istringstream ls(line);
    std::vector<std::string> f;
    for (std::string w; ls >> w;) f.push_back(w);
    if (f.empty()) continue;
    if (f[0] == "precision") {
      EXPECT_EQ(f[1], "f64");
    }
    if (f[0] == "tensor") {
      int64_t n = 1;
      for (size_t i = 5; i < f.size(); ++i) n *= std::stoll(f[i]);
      per_expert[f[1]] = n;
      out[f[1]].assign(size_t(n * std::stoll(f[3])), std::nan(""));
    }
    if (f[0] == "segment") segments.push_back(f);
  }
  for (const auto& s : segments) {
    const int64_t n = per_expert.at(s[2]) * std::stoll(s[4]);
    std::ifstream in(dir / s[1], std::ios::binary);
    in.seekg(std::stoll(s[5]));
    in.read(reinterpret_cast<char*>(out[s[2]].data() + per_expert.at(s[2]) * std::stoll(s[3])),
            std::streamsize(n * 8));
    EXPECT_TRUE(in.good()) << s[1];
  }
  return out;
}

double max_rel_diff(const std::map<std::string, std::vector<double>>& a,
                    const std::map<std::string, std::vector<double>>& b, std::string* worst) {
  double worst_diff = 0;
  EXPECT_EQ(a.size(), b.size());
  for (const auto& [name, va] : a) {
    const auto& vb = b.at(name);
    EXPECT_EQ(va.size(), vb.size()) << name;
    double diff = 0, scale = 0;
    for (size_t i = 0; i < std::min(va.size(), vb.size()); ++i) {
      diff = std::max(diff, std::abs(va[i] - vb[i]));
      scale = std::max(scale, std::abs(vb[i]));
    }
    const double d = scale > 0 ? diff / scale : diff;
    if (!(d <= worst_diff)) worst_diff = d, *worst = name;
  }
  return worst_diff;
}

// The data files of a checkpoint (everything but the manifest, which records wall time and
// restarts).
void expect_same_data_files(const fs::path& a, const fs::path& b) {
  int files = 0;
  for (const auto& f : fs::directory_iterator(a)) {
    if (f.path().filename() == "manifest.txt") continue;
    ++files;
    EXPECT_TRUE(read_text(f.path()) == read_text(b / f.path().filename())) << f.path().filename() << " differs";
  }
  EXPECT_EQ(files, 3) << "replicated.bin and two expert files";
}

TEST_F(TrainSystem, InputsCpuTinyOnTwoAndFourRanks) {
  const std::string ini = std::string(FINEMOE_SOURCE_DIR) + "/inputs/cpu-tiny.ini";
  const std::string data = " --data.train=" + (dir_ / "data" / "train.bin").string() +
                           " --data.val=" + (dir_ / "data" / "val.bin").string() +
                           " --train.steps=12 --train.eval_interval=6 --train.eval_sequences=16"
                           " --output.log_interval=1 --output.checkpoint_interval=6 --train.threads=1";
  std::vector<double> loss2;
  for (int ranks : {2, 4}) {
    SCOPED_TRACE(std::to_string(ranks) + " ranks");
    const fs::path out = dir_ / ("tiny" + std::to_string(ranks));
    const Result r = run(ini + data + " --output.dir=" + out.string(), ranks);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find("world " + std::to_string(ranks) + " = EP 2 x DP " + std::to_string(ranks / 2)),
              std::string::npos)
        << r.output;
    RunRecordReader rec((out / "record.h5").string());
    EXPECT_EQ(rec.check().state, RecordState::completed) << rec.check().reason;
    EXPECT_EQ(rec.run().world_size, ranks);
    EXPECT_EQ(rec.run().expert_parallel, 2);
    const auto rows = rec.train();
    EXPECT_EQ(steps(rows), range(1, 12));
    ASSERT_EQ(rows.size(), 12u);
    EXPECT_LT(rows.back().loss, rows.front().loss) << "no learning";
    EXPECT_EQ(rec.eval().size(), 2u);
    EXPECT_TRUE(fs::exists(out / "checkpoints" / "step_12" / "manifest.txt"));
    if (ranks == 2) {
      loss2 = losses(rows);
    } else {  // same global batches on another layout: fp32 rounding differences only
      for (size_t s = 0; s < rows.size(); ++s)
        EXPECT_NEAR(rows[s].loss, loss2[s], 1e-4 * loss2[s]) << "step " << s + 1;
    }
  }
}

TEST_F(TrainSystem, ResumeIsBitExactAndRelayoutMatches) {
  const Result straight = run(tiny("straight"), 2);
  ASSERT_EQ(straight.exit_code, 0) << straight.output;

  const Result first = run(tiny("halves", "--train.stop_after=20"), 2);
  ASSERT_EQ(first.exit_code, 75) << "stop_after exits like a stop signal\n" << first.output;
  EXPECT_NE(first.output.find("train.stop_after = 20 steps done"), std::string::npos) << first.output;
  {
    RunRecordReader rec((dir_ / "halves" / "record.h5").string());
    EXPECT_EQ(rec.status(), RunStatus::interrupted);
    EXPECT_EQ(rec.check().state, RecordState::incomplete);
    EXPECT_EQ(steps(rec.train()), range(1, 20));
  }
  fs::copy(dir_ / "halves", dir_ / "relayout", fs::copy_options::recursive);

  const Result second = run(tiny("halves", "--resume --train.stop_after=20"), 2);
  ASSERT_EQ(second.exit_code, 0) << second.output;
  EXPECT_NE(second.output.find("resumed from checkpoint at step 20"), std::string::npos) << second.output;

  RunRecordReader a((dir_ / "straight" / "record.h5").string());
  RunRecordReader b((dir_ / "halves" / "record.h5").string());
  EXPECT_EQ(b.check().state, RecordState::completed) << b.check().reason;
  EXPECT_EQ(b.resume_count(), 1);
  EXPECT_EQ(steps(b.train()), range(1, 40));
  EXPECT_EQ(losses(a.train()), losses(b.train())) << "losses bit for bit";
  ASSERT_EQ(a.eval().size(), b.eval().size());
  for (size_t i = 0; i < a.eval().size(); ++i) EXPECT_EQ(a.eval()[i].loss, b.eval()[i].loss);
  EXPECT_EQ(a.final_values()->eval_loss, b.final_values()->eval_loss);
  expect_same_data_files(dir_ / "straight" / "checkpoints" / "step_40", dir_ / "halves" / "checkpoints" / "step_40");

  // 2 ranks (EP 2) for the first half, 4 ranks (EP 4) for the second.
  const Result relayout = run(tiny("relayout", "--resume --parallel.expert_parallel=4"), 4);
  ASSERT_EQ(relayout.exit_code, 0) << relayout.output;
  RunRecordReader c((dir_ / "relayout" / "record.h5").string());
  EXPECT_EQ(c.check().state, RecordState::completed) << c.check().reason;
  ASSERT_EQ(steps(c.train()), range(1, 40));
  double loss_diff = 0;
  for (size_t s = 0; s < 40; ++s) {
    const double d = std::abs(c.train()[s].loss - a.train()[s].loss) / a.train()[s].loss;
    loss_diff = std::max(loss_diff, d);
    if (s < 20) {
      EXPECT_EQ(c.train()[s].loss, a.train()[s].loss) << "step " << s + 1 << " ran on 2 ranks";
    }
  }
  std::string worst;
  const double param_diff = max_rel_diff(read_checkpoint(dir_ / "relayout" / "checkpoints" / "step_40"),
                                         read_checkpoint(dir_ / "straight" / "checkpoints" / "step_40"), &worst);
  EXPECT_LE(loss_diff, 1e-10);
  EXPECT_LE(param_diff, 1e-10) << worst;
  std::printf("2 -> 4 ranks (EP 2 -> 4): max rel. diff losses %.1e, final parameters %.1e (%s)\n", loss_diff,
              param_diff, worst.c_str());
}

// Issue 20: a shared expert, swiglu and loss-free balancing (its bias is model state moved outside
// the optimizer): 40 steps straight == 20 + resume + 20, losses and checkpoint files bit for bit,
// and the bias has moved (it is in replicated.bin; the balancer's per-layer imbalance is logged).
TEST_F(TrainSystem, ResumeWithSharedExpertSwigluAndBiasBalancingIsBitExact) {
  const std::string options =
      "--moe.shared_experts=1 --model.activation=swiglu --moe.balance=bias --moe.bias_rate=0.01 ";
  const Result straight = run(tiny("straight", options), 2);
  ASSERT_EQ(straight.exit_code, 0) << straight.output;
  const Result first = run(tiny("halves", options + "--train.stop_after=20"), 2);
  ASSERT_EQ(first.exit_code, 75) << first.output;
  const Result second = run(tiny("halves", options + "--resume --train.stop_after=20"), 2);
  ASSERT_EQ(second.exit_code, 0) << second.output;
  RunRecordReader a((dir_ / "straight" / "record.h5").string());
  RunRecordReader b((dir_ / "halves" / "record.h5").string());
  EXPECT_EQ(b.check().state, RecordState::completed) << b.check().reason;
  EXPECT_EQ(losses(a.train()), losses(b.train())) << "losses bit for bit";
  expect_same_data_files(dir_ / "straight" / "checkpoints" / "step_40", dir_ / "halves" / "checkpoints" / "step_40");
  const auto params = read_checkpoint(dir_ / "straight" / "checkpoints" / "step_40");
  for (const char* bias : {"blocks.0.moe.router_bias", "blocks.1.moe.router_bias"}) {
    ASSERT_TRUE(params.count(bias)) << bias << " not in the checkpoint";
    double moved = 0;
    for (double v : params.at(bias)) moved = std::max(moved, std::abs(v));
    EXPECT_GT(moved, 0.0) << bias << " never moved";
  }
  EXPECT_TRUE(params.count("blocks.0.moe.shared.w1")) << "the shared expert is in the checkpoint";
  // The record's per-block load imbalance: max / mean of that row's expert_load.
  for (const TrainRow& row : b.train()) {
    ASSERT_EQ(row.load_imbalance.size(), 2u) << "step " << row.step;
    for (int blk = 0; blk < 2; ++blk) {
      const auto block_load = row.expert_load.begin() + blk * 8;
      const double total = double(std::accumulate(block_load, block_load + 8, int64_t(0)));
      EXPECT_DOUBLE_EQ(row.load_imbalance[size_t(blk)], double(*std::max_element(block_load, block_load + 8)) * 8 / total);
    }
  }
}

TEST_F(TrainSystem, SigkillLeavesReadableRecordAndResumeCompletes) {
  const fs::path out = dir_ / "killed";
  const std::string args = tiny("killed", "--train.steps=120 --output.checkpoint_interval=10");
  {
    Job job(args, 2, dir_ / "killed.log", 120);
    const auto start = Clock::now();
    while (!fs::exists(out / "checkpoints" / "step_20") && seconds_since(start) < 60)
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    ASSERT_TRUE(fs::exists(out / "checkpoints" / "step_20")) << job.output();
    const auto ranks = job.ranks();
    ASSERT_EQ(ranks.size(), 2u) << "rank processes of the job";
    for (pid_t p : ranks) kill(p, SIGKILL);
    const int rc = job.wait();
    EXPECT_NE(rc, 0) << job.output();
    EXPECT_EQ(job.output().find("done:"), std::string::npos) << "the run finished before the kill\n" << job.output();
  }
  int64_t logged = 0;
  {
    RunRecordReader rec((out / "record.h5").string());
    EXPECT_EQ(rec.status(), RunStatus::running);
    const RecordCheck check = RunRecordReader::classify((out / "record.h5").string());
    EXPECT_EQ(check.state, RecordState::incomplete) << check.reason;
    const auto rows = rec.train();
    ASSERT_GE(rows.size(), 20u);
    EXPECT_EQ(steps(rows), range(1, int64_t(rows.size())));
    logged = int64_t(rows.size());
    for (const auto& r : rows) EXPECT_TRUE(std::isfinite(r.loss));
  }
  EXPECT_EQ(std::system(("h5dump -H '" + (out / "record.h5").string() + "' > /dev/null 2>&1").c_str()), 0)
      << "h5dump cannot read the killed record";

  int64_t newest = 0;
  for (const auto& d : fs::directory_iterator(out / "checkpoints")) {
    const std::string name = d.path().filename().string();
    if (name.rfind("step_", 0) == 0 && name.find('.') == std::string::npos)
      newest = std::max<int64_t>(newest, std::stoll(name.substr(5)));
  }
  ASSERT_GE(newest, 20);
  const Result resumed = run(args + " --resume", 2);
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("resumed from checkpoint at step " + std::to_string(newest)), std::string::npos)
      << resumed.output;
  RunRecordReader rec((out / "record.h5").string());
  EXPECT_EQ(rec.check().state, RecordState::completed) << rec.check().reason;
  EXPECT_EQ(steps(rec.train()), range(1, 120)) << "rows after the checkpoint (" << logged << " logged) replaced once";
  std::printf("killed after %lld logged steps, resumed from step %lld\n", (long long)logged, (long long)newest);
}

TEST_F(TrainSystem, DamagedCheckpointsAreRejectedAndThePreviousUsed) {
  const std::string args = tiny("damaged", "--train.steps=30 --output.checkpoint_interval=10 --output.keep_checkpoints=3");
  const Result clean = run(args, 2);
  ASSERT_EQ(clean.exit_code, 0) << clean.output;
  const fs::path ck = dir_ / "damaged" / "checkpoints";
  const std::vector<double> clean_losses = losses(RunRecordReader((dir_ / "damaged" / "record.h5").string()).train());
  const std::string step30 = read_text(ck / "step_30" / "replicated.bin");

  // step_30: an expert file cut short; step_20: one flipped byte in the replicated tensors.
  fs::resize_file(ck / "step_30" / "experts_1.bin", fs::file_size(ck / "step_30" / "experts_1.bin") - 8);
  {
    std::fstream f(ck / "step_20" / "replicated.bin", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(100);
    char byte = 0;
    f.read(&byte, 1);
    f.seekp(100);
    byte = char(byte ^ 0x10);
    f.write(&byte, 1);
  }
  const Result resumed = run(args + " --resume", 2);
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  const std::string& o = resumed.output;
  EXPECT_NE(o.find("step_30 rejected"), std::string::npos) << o;
  EXPECT_NE(o.find("experts_1.bin"), std::string::npos) << o;
  EXPECT_NE(o.find("(truncated)"), std::string::npos) << o;
  EXPECT_NE(o.find("step_20 rejected"), std::string::npos) << o;
  EXPECT_NE(o.find("replicated.bin"), std::string::npos) << o;
  EXPECT_NE(o.find("(corrupt)"), std::string::npos) << o;
  EXPECT_NE(o.find("resumed from checkpoint at step 10"), std::string::npos) << o;
  RunRecordReader rec((dir_ / "damaged" / "record.h5").string());
  EXPECT_EQ(rec.check().state, RecordState::completed);
  EXPECT_EQ(steps(rec.train()), range(1, 30));
  EXPECT_EQ(losses(rec.train()), clean_losses) << "steps 11..30 again from step_10, bit for bit";
  EXPECT_TRUE(read_text(ck / "step_30" / "replicated.bin") == step30) << "the rewritten step_30 differs";
}

TEST_F(TrainSystem, CompletedRecordIsNotOverwrittenUnlessAsked) {
  const std::string args = tiny("done");
  ASSERT_EQ(run(args + " --train.steps=4", 2).exit_code, 0);
  const fs::path record = dir_ / "done" / "record.h5";
  const std::string before = read_text(record);

  // With its checkpoints there, and without them (the record alone).
  const Result again = run(args + " --train.steps=4", 2);
  EXPECT_EQ(again.exit_code, 2) << again.output;
  EXPECT_NE(again.output.find("holds checkpoints of an earlier run"), std::string::npos) << again.output;
  EXPECT_NE(again.output.find("output.overwrite = true"), std::string::npos) << again.output;
  fs::remove_all(dir_ / "done" / "checkpoints");
  const Result record_only = run(args + " --train.steps=4", 2);
  EXPECT_EQ(record_only.exit_code, 2) << record_only.output;
  EXPECT_NE(record_only.output.find(record.string()), std::string::npos) << record_only.output;
  EXPECT_NE(record_only.output.find("overwrite"), std::string::npos) << record_only.output;
  EXPECT_TRUE(read_text(record) == before) << "the completed record was modified";

  const Result overwritten = run(args + " --output.overwrite=true --train.steps=3", 2);
  EXPECT_EQ(overwritten.exit_code, 0) << overwritten.output;
  RunRecordReader rec(record.string());
  EXPECT_EQ(rec.check().state, RecordState::completed);
  EXPECT_EQ(steps(rec.train()), range(1, 3));
}

TEST_F(TrainSystem, NonFiniteLossEndsEveryRankPromptly) {
  const Result r = run(tiny("nan", "--train.precision=fp32 --train.lr=1e30 --train.final_lr=1e30 "
                                   "--train.grad_clip=0 --train.steps=50"),
                       2, 60);
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_GT(r.exit_code, 0) << "killed by the timeout: a hang\n" << r.output;
  EXPECT_LT(r.seconds, 30) << r.output;
  // Every rank sees the reduced loss and names itself (lines may interleave with mpiexec's own).
  EXPECT_TRUE(std::regex_search(r.output, std::regex("rank [01]: fatal: training loss is -?(nan|inf) at step")))
      << r.output;
  EXPECT_NE(r.output.find("lower train.lr"), std::string::npos) << r.output;
  RunRecordReader rec((dir_ / "nan" / "record.h5").string());
  EXPECT_EQ(rec.status(), RunStatus::failed);
  EXPECT_NE(rec.status_reason().find("training loss is"), std::string::npos) << rec.status_reason();
  EXPECT_EQ(RunRecordReader::classify((dir_ / "nan" / "record.h5").string()).state, RecordState::failed);
}

// A rank that stops taking part (test hook: FINEMOE_TEST_STALL_RANK sleeps before step
// FINEMOE_TEST_STALL_STEP) is reported by the other ranks' watchdog with the collective they wait
// in and the missing rank, and the job ends (MPI_Abort) well before the stall would.
TEST_F(TrainSystem, WatchdogNamesTheMissingRank) {
  for (int ranks : {2, 4}) {
    SCOPED_TRACE(std::to_string(ranks) + " ranks");
    const int missing = ranks - 1;
    ::setenv("FINEMOE_TEST_STALL_RANK", std::to_string(missing).c_str(), 1);
    ::setenv("FINEMOE_TEST_STALL_STEP", "5", 1);
    const Result r = run(tiny("stall" + std::to_string(ranks), "--parallel.watchdog_s=2 --train.steps=10"), ranks, 90);
    ::unsetenv("FINEMOE_TEST_STALL_RANK");
    ::unsetenv("FINEMOE_TEST_STALL_STEP");
    EXPECT_GT(r.exit_code, 0) << "a clean exit or a timeout kill\n" << r.output;
    EXPECT_LT(r.seconds, 30) << r.output;
    EXPECT_NE(r.output.find("watchdog"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("step 5"), std::string::npos) << "the collective waited in\n" << r.output;
    EXPECT_NE(r.output.find("missing: rank " + std::to_string(missing)), std::string::npos) << r.output;
    for (int other = 0; other < missing; ++other)
      EXPECT_EQ(r.output.find("missing: rank " + std::to_string(other)), std::string::npos) << r.output;
    std::printf("%d ranks: watchdog ended the job after %.1f s\n", ranks, r.seconds);
  }
}

}  // namespace
}  // namespace finemoe
