// Kill injection, enumerated rather than timed (issue 19): an LD_PRELOAD shim (kill_shim.c)
// counts the write/pwrite/fsync/rename calls a run makes on its output directory and SIGKILLs the
// process at call k, for every k from 1 to the calls of the whole run. That covers the record's
// creation, its first flush and later appends, the checkpoint data files, manifest, fsyncs and
// renames, and the record's completion. After each kill the record (if any) must open as a record
// without repair, and `--resume` (no shim) must complete the run bit-identical to an uninterrupted
// one in every column but the timing ones (docs/run-record.md lists them).
// Scenarios: 1 rank fresh; 1 rank resuming a stopped run (the record is cut on a copy); 1 rank
// stopping after a step (the record marked interrupted); 2 ranks where every rank counts (the
// first to reach k dies); 2 ranks where only rank 1 is killed.
// Cost: about 300 kills, each a killed run and a resume; they run 6 at a time (mostly waiting on
// MPI start-up).
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "io/run_record.h"
#include "data/shard.h"

namespace finemoe {
namespace {

namespace fs = std::filesystem;

int shell(const std::string& cmd) {
  const int status = std::system(cmd.c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// "" when equal in every non-timing column, else the first difference.
std::string compare_records(const fs::path& got_path, const fs::path& want_path) {
  const RecordCheck check = RunRecordReader::classify(got_path.string());
  if (check.state != RecordState::completed) return "not completed: " + check.reason;
  RunRecordReader got(got_path.string()), want(want_path.string());
  const auto a = got.train(), b = want.train();
  if (a.size() != b.size()) return std::to_string(a.size()) + " train rows, want " + std::to_string(b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    const TrainRow &x = a[i], &y = b[i];
    if (x.step != y.step || x.tokens != y.tokens || x.loss != y.loss || x.lr != y.lr || x.grad_norm != y.grad_norm ||
        x.aux_loss != y.aux_loss || x.alltoall_bytes != y.alltoall_bytes || x.dropped_fraction != y.dropped_fraction ||
        x.expert_load != y.expert_load)
      return "train row " + std::to_string(i) + " differs";
  }
  const auto e = got.eval(), f = want.eval();
  if (e.size() != f.size()) return "eval rows differ in number";
  for (size_t i = 0; i < e.size(); ++i)
    if (e[i].step != f[i].step || e[i].tokens != f[i].tokens || e[i].loss != f[i].loss)
      return "eval row " + std::to_string(i) + " differs";
  const auto g = got.final_values(), h = want.final_values();
  if (g->eval_loss != h->eval_loss || g->smoothed_train_loss != h->smoothed_train_loss || g->tokens != h->tokens ||
      g->flops != h->flops)
    return "/final differs";
  return "";
}

class KillInjection : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char* kv : {"OMPI_ALLOW_RUN_AS_ROOT=1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1", "OMP_NUM_THREADS=1",
                           "OPENBLAS_NUM_THREADS=1", "OMP_WAIT_POLICY=passive"}) {
      const std::string s(kv);
      ::setenv(s.substr(0, s.find('=')).c_str(), s.substr(s.find('=') + 1).c_str(), 0);
    }
    dir_ = fs::absolute(fs::path(::testing::TempDir())) /
           ("finemoe_kill_" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()) + "_" +
            std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "data");
    std::vector<uint16_t> tokens(4096);
    for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = uint16_t((i * 7 + i / 13) % 64);
    write_shard((dir_ / "data" / "train.bin").string(), tokens.data(), tokens.size());
    write_shard((dir_ / "data" / "val.bin").string(), tokens.data(), 1024);
    // Two steps, a checkpoint after each, every row logged: creation, first flush, a later
    // append, two checkpoints and the completion in about 110 calls.
    std::ofstream(dir_ / "tiny.ini") << "[model]\nd_model = 16\nn_blocks = 1\nn_heads = 2\ncontext = 16\nvocab = 64\n"
                                        "[moe]\nexpansion_rate = 4\ngranularity = 2\nrouting = token_choice\n"
                                        "top_k = 1\ngroup_size = 4\n"
                                        "[train]\nprecision = fp64\nseed = 3\nsteps = 2\nbatch_size = 8\n"
                                        "lr = 1e-2\nfinal_lr = 1e-3\neval_interval = 0\neval_sequences = 8\nthreads = 1\n"
                                        "[data]\ntrain = " << (dir_ / "data" / "train.bin").string()
                                     << "\nval = " << (dir_ / "data" / "val.bin").string()
                                     << "\n[output]\nlog_interval = 1\ncheckpoint_interval = 1\nkeep_checkpoints = 2\n";
  }
  void TearDown() override {
    if (!HasFailure()) fs::remove_all(dir_);
    else std::printf("kept %s for inspection\n", dir_.c_str());
  }

  std::string command(const fs::path& out, int ranks, const std::string& extra) const {
    return std::string(FINEMOE_MPIEXEC) + " -np " + std::to_string(ranks) + " --oversubscribe " + FINEMOE_TRAIN_BIN +
           " " + (dir_ / "tiny.ini").string() + " --quiet --parallel.expert_parallel=" + std::to_string(ranks) +
           " --output.dir=" + out.string() + " " + extra;
  }
  std::string shim_env(const fs::path& out, const std::string& rank, long k) const {
    return "LD_PRELOAD=" + std::string(FINEMOE_KILL_SHIM) + " FINEMOE_KILL_DIR=" + out.string() +
           " FINEMOE_KILL_RANK=" + rank + " FINEMOE_KILL_AT=" + std::to_string(k) + " ";
  }

  // `base_args` prepares the run directory each kill starts from ("" = empty); `args` is the
  // run that is killed. Returns the number of kills checked.
  long enumerate(int ranks, const std::string& kill_rank, const std::string& base_args, const std::string& args,
                 int clean_exit = 0) {
    const fs::path ref = dir_ / "reference", base = dir_ / "base";
    EXPECT_EQ(shell(command(ref, ranks, "") + " > /dev/null 2>&1"), 0);
    if (!base_args.empty()) {
      EXPECT_EQ(shell(command(base, ranks, base_args) + " > /dev/null 2>&1"), 75);
    }
    // Count the calls of the run to kill.
    const fs::path counted = dir_ / "counted";
    if (!base_args.empty()) fs::copy(base, counted, fs::copy_options::recursive);
    EXPECT_EQ(shell("FINEMOE_KILL_REPORT=" + (dir_ / "calls").string() + " " + shim_env(counted, kill_rank, 0) +
                    command(counted, ranks, args) + " > /dev/null 2>&1"),
              clean_exit);
    long total = 0;
    for (const auto& f : fs::directory_iterator(dir_))
      if (f.path().filename().string().rfind("calls.", 0) == 0) total = std::max(total, std::stol(read_text(f.path())));
    EXPECT_GT(total, 0) << "the shim counted nothing";

    std::mutex mu;
    std::vector<std::string> failures;
    std::atomic<long> next{1};
    const auto worker = [&] {
      for (long k; (k = next++) <= total;) {
        const fs::path out = dir_ / ("k" + std::to_string(k));
        if (!base_args.empty()) fs::copy(base, out, fs::copy_options::recursive);
        const fs::path log = dir_ / ("k" + std::to_string(k) + ".log");
        const int killed = shell(shim_env(out, kill_rank, k) + command(out, ranks, args) + " > " + log.string() + " 2>&1");
        std::string why;
        const fs::path record = out / "record.h5";
        if (killed == clean_exit) why = "not killed (exit " + std::to_string(killed) + ")";
        if (why.empty() && fs::exists(record)) {
          // mpiexec may return while another rank is still being ended and holds the file's lock.
          RecordCheck c = RunRecordReader::classify(record.string());
          for (int wait = 0; wait < 100 && c.reason.find("locked by another writer") != std::string::npos; ++wait) {
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
            c = RunRecordReader::classify(record.string());
          }
          if (c.state != RecordState::incomplete && c.state != RecordState::completed)
            why = "record does not open as a record after the kill: " + c.reason;
        }
        if (why.empty()) {
          const int rc = shell(command(out, ranks, "--resume") + " > " + log.string() + " 2>&1");
          if (rc != 0) why = "--resume exit " + std::to_string(rc) + ": " + read_text(log);
          else why = compare_records(record, ref / "record.h5");
        }
        std::lock_guard<std::mutex> lock(mu);
        if (!why.empty()) failures.push_back("kill at call " + std::to_string(k) + ": " + why);
        else fs::remove_all(out), fs::remove(log);
      }
    };
    std::vector<std::thread> pool;
    for (int i = 0; i < 6; ++i) pool.emplace_back(worker);
    for (auto& t : pool) t.join();
    std::sort(failures.begin(), failures.end());
    for (size_t i = 0; i < std::min<size_t>(failures.size(), 10); ++i) ADD_FAILURE() << failures[i];
    EXPECT_TRUE(failures.empty()) << failures.size() << " of " << total << " kills failed";
    std::printf("%ld kills at every counted call, %zu failed\n", total, failures.size());
    return total;
  }
  fs::path dir_;
};

TEST_F(KillInjection, OneRankFreshRun) { EXPECT_GT(enumerate(1, "0", "", ""), 100); }

TEST_F(KillInjection, OneRankResumedRun) { EXPECT_GT(enumerate(1, "0", "--train.stop_after=1", "--resume"), 50); }

// A run that stops after its first step (train.stop_after): the record is marked interrupted.
TEST_F(KillInjection, OneRankStoppingRun) { EXPECT_GT(enumerate(1, "0", "", "--train.stop_after=1", 75), 20); }

TEST_F(KillInjection, TwoRanksEveryRankCounts) { EXPECT_GT(enumerate(2, "any", "", ""), 100); }

TEST_F(KillInjection, TwoRanksOnlyRankOneKilled) { EXPECT_GE(enumerate(2, "1", "", ""), 3); }

}  // namespace
}  // namespace finemoe
