// Run records: every field round-trips, appends survive reopening and SIGKILL, completed
// records are protected, and resuming drops exactly the rows after the checkpoint.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "finemoe/version.h"
#include "io/h5.h"
#include "io/run_record.h"
#include "io/run_record_schema.h"
#include "util/check.h"

namespace finemoe {
namespace {

namespace fs = std::filesystem;

class RunRecordTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("finemoe_record_" + std::to_string(getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    path_ = (dir_ / "record.h5").string();
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
  std::string path_;
};

RunInfo sample_run() {
  RunInfo run;
  run.command_line = "finemoe-train inputs/x.ini --train.steps=100";
  run.config = {{"model.d_model", "64"}, {"moe.granularity", "4"}, {"train.lr", "0.0002"}};
  run.config_text = "[model]\nd_model = 64\n" + std::string(100000, '#') + "\n";  // > 64 KB
  run.world_size = 4;
  run.expert_parallel = 2;
  run.data_parallel = 2;
  run.backend = "cpu";
  run.moe_enabled = true;
  run.rank_hosts = {"node1", "node1", "node2", "node2"};
  run.rank_devices = {"cpu", "cpu", "cpu", "cpu"};
  return run;
}

ModelInfo sample_model() {
  ModelInfo m;
  m.N_total = 12345678;
  m.N_active = 1234567;
  m.N_embedding = 65536;
  m.N_router = 4096;
  m.d_model = 64;
  m.n_blocks = 2;
  m.n_heads = 4;
  m.E = 4;
  m.G = 2;
  m.n_experts = 8;
  m.d_expert = 128;
  m.top_k = 2;
  m.routing = "expert_choice";
  m.vocab = 256;
  m.context = 64;
  m.flops_per_token = 1.5e7;
  m.flops_per_token_counted = 1.6e7;
  return m;
}

TrainRow sample_row(int64_t step, const ModelInfo& m) {
  TrainRow r;
  r.step = step;
  r.tokens = step * 2048;
  r.loss = 5.0 / (1.0 + 0.01 * double(step));
  r.lr = 1e-4 + 1e-7 * double(step);
  r.grad_norm = 0.5 + 0.001 * double(step);
  r.aux_loss = 0.01 * double(step);
  r.step_time_s = 0.25;
  r.tokens_per_s = 8192;
  r.alltoall_time_s = 0.01;
  r.alltoall_bytes = 1 << 20;
  r.expert_gemm_time_s = 0.1;
  r.dropped_fraction = 0.02;
  r.phase_times = {{"router_s", 0.003 * double(step)}, {"attention_s", 0.002}};
  for (int64_t i = 0; i < m.n_blocks * m.n_experts; ++i) r.expert_load.push_back(step * 100 + i);
  return r;
}

void expect_rows_equal(const TrainRow& a, const TrainRow& b) {
  EXPECT_EQ(a.step, b.step);
  EXPECT_EQ(a.tokens, b.tokens);
  EXPECT_EQ(a.loss, b.loss);
  EXPECT_EQ(a.lr, b.lr);
  EXPECT_EQ(a.grad_norm, b.grad_norm);
  EXPECT_EQ(a.aux_loss, b.aux_loss);
  EXPECT_EQ(a.step_time_s, b.step_time_s);
  EXPECT_EQ(a.tokens_per_s, b.tokens_per_s);
  EXPECT_EQ(a.alltoall_time_s, b.alltoall_time_s);
  EXPECT_EQ(a.alltoall_bytes, b.alltoall_bytes);
  EXPECT_EQ(a.expert_gemm_time_s, b.expert_gemm_time_s);
  EXPECT_EQ(a.dropped_fraction, b.dropped_fraction);
  auto sorted = [](auto v) {
    std::sort(v.begin(), v.end());
    return v;
  };
  EXPECT_EQ(sorted(a.phase_times), sorted(b.phase_times));
  EXPECT_EQ(a.expert_load, b.expert_load);
}

TEST_F(RunRecordTest, EveryFieldRoundTrips) {
  const RunInfo run = sample_run();
  const ModelInfo model = sample_model();
  std::vector<TrainRow> rows;
  {
    RunRecordWriter w = RunRecordWriter::create(path_, run, model, false);
    for (int64_t step = 10; step <= 100; step += 10) {
      rows.push_back(sample_row(step, model));
      w.append_train(rows.back());
    }
    w.append_eval({50, 50 * 2048, 3.5});
    w.append_eval({100, 100 * 2048, 3.25});
    const FinalInfo fin = w.complete({3.25, 204800, 3.1e12, 42.5});
    // Last 10% of 100 steps: only step 100 is > 90.
    EXPECT_DOUBLE_EQ(fin.smoothed_train_loss, rows.back().loss);
  }
  RunRecordReader r(path_);
  EXPECT_EQ(r.format_version(), record::kFormatVersion);
  EXPECT_EQ(r.finemoe_version(), kVersion);
  EXPECT_EQ(r.git_commit(), kGitCommit);
  EXPECT_EQ(r.status(), RunStatus::completed);
  EXPECT_EQ(r.status_reason(), "");
  EXPECT_EQ(r.resume_count(), 0);
  EXPECT_EQ(r.start_time().size(), 20u);  // 2024-01-01T00:00:00Z
  EXPECT_EQ(r.end_time().size(), 20u);

  const RunInfo got = r.run();
  EXPECT_EQ(got.command_line, run.command_line);
  auto sorted_config = run.config;
  std::sort(sorted_config.begin(), sorted_config.end());
  EXPECT_EQ(got.config, sorted_config);
  EXPECT_EQ(got.config_text, run.config_text);
  EXPECT_EQ(got.world_size, 4);
  EXPECT_EQ(got.expert_parallel, 2);
  EXPECT_EQ(got.data_parallel, 2);
  EXPECT_EQ(got.backend, "cpu");
  EXPECT_TRUE(got.moe_enabled);
  EXPECT_EQ(got.rank_hosts, run.rank_hosts);
  EXPECT_EQ(got.rank_devices, run.rank_devices);

  const ModelInfo m = r.model();
  EXPECT_EQ(m.N_total, model.N_total);
  EXPECT_EQ(m.N_active, model.N_active);
  EXPECT_EQ(m.N_embedding, model.N_embedding);
  EXPECT_EQ(m.N_router, model.N_router);
  EXPECT_EQ(m.d_model, model.d_model);
  EXPECT_EQ(m.n_blocks, model.n_blocks);
  EXPECT_EQ(m.n_heads, model.n_heads);
  EXPECT_EQ(m.E, model.E);
  EXPECT_EQ(m.G, model.G);
  EXPECT_EQ(m.n_experts, model.n_experts);
  EXPECT_EQ(m.d_expert, model.d_expert);
  EXPECT_EQ(m.top_k, model.top_k);
  EXPECT_EQ(m.routing, model.routing);
  EXPECT_EQ(m.vocab, model.vocab);
  EXPECT_EQ(m.context, model.context);
  EXPECT_EQ(m.flops_per_token, model.flops_per_token);
  EXPECT_EQ(m.flops_per_token_counted, model.flops_per_token_counted);

  const std::vector<TrainRow> got_rows = r.train();
  ASSERT_EQ(got_rows.size(), rows.size());
  for (std::size_t i = 0; i < rows.size(); ++i) expect_rows_equal(got_rows[i], rows[i]);

  const std::vector<EvalRow> ev = r.eval();
  ASSERT_EQ(ev.size(), 2u);
  EXPECT_EQ(ev[1].step, 100);
  EXPECT_EQ(ev[1].tokens, 204800);
  EXPECT_EQ(ev[1].loss, 3.25);

  const auto fin = r.final_values();
  ASSERT_TRUE(fin.has_value());
  EXPECT_EQ(fin->eval_loss, 3.25);
  EXPECT_EQ(fin->smoothed_train_loss, rows.back().loss);
  EXPECT_EQ(fin->tokens, 204800);
  EXPECT_EQ(fin->flops, 3.1e12);
  EXPECT_EQ(fin->wall_time_s, 42.5);
  EXPECT_EQ(r.check().state, RecordState::completed);
}

TEST_F(RunRecordTest, DenseRecordHasNoExpertLoad) {
  RunInfo run = sample_run();
  run.moe_enabled = false;
  ModelInfo model = sample_model();
  model.E = model.G = model.n_experts = model.top_k = 0;
  RunRecordWriter w = RunRecordWriter::create(path_, run, model, false);
  TrainRow row = sample_row(1, model);
  EXPECT_TRUE(row.expert_load.empty());
  w.append_train(row);
  row.step = 2;
  row.expert_load = {1, 2};
  EXPECT_THROW(w.append_train(row), RuntimeFailure);
  w.complete({3.0, 100, 1e9, 1.0});
  EXPECT_EQ(RunRecordReader::classify(path_).state, RecordState::completed);
  EXPECT_FALSE(RunRecordReader(path_).run().moe_enabled);
}

TEST_F(RunRecordTest, RejectsMalformedRows) {
  const ModelInfo model = sample_model();
  RunRecordWriter w = RunRecordWriter::create(path_, sample_run(), model, false);
  w.append_train(sample_row(10, model));
  EXPECT_THROW(w.append_train(sample_row(10, model)), RuntimeFailure);  // step does not increase
  TrainRow short_load = sample_row(20, model);
  short_load.expert_load.pop_back();
  EXPECT_THROW(w.append_train(short_load), RuntimeFailure);
  TrainRow other_phase = sample_row(20, model);
  other_phase.phase_times[0].first = "something_else_s";
  EXPECT_THROW(w.append_train(other_phase), RuntimeFailure);
  EXPECT_EQ(RunRecordReader(path_).train().size(), 1u);
}

TEST_F(RunRecordTest, AppendsSurviveReopening) {
  const ModelInfo model = sample_model();
  {
    RunRecordWriter w = RunRecordWriter::create(path_, sample_run(), model, false);
    for (int64_t step = 1; step <= 5; ++step) w.append_train(sample_row(step, model));
  }  // closed without completing: the process went away
  {
    RunRecordReader r(path_);
    EXPECT_EQ(r.status(), RunStatus::running);
    EXPECT_EQ(r.train().size(), 5u);
    EXPECT_FALSE(r.final_values().has_value());
    const RecordCheck c = r.check();
    EXPECT_EQ(c.state, RecordState::incomplete);
    EXPECT_NE(c.reason.find("last step 5"), std::string::npos) << c.reason;
  }
  {
    RunRecordWriter w = RunRecordWriter::resume(path_, 5);
    for (int64_t step = 6; step <= 8; ++step) w.append_train(sample_row(step, model));
    w.complete({3.0, 8 * 2048, 1e12, 10});
  }
  RunRecordReader r(path_);
  const auto rows = r.train();
  ASSERT_EQ(rows.size(), 8u);
  for (std::size_t i = 0; i < rows.size(); ++i) expect_rows_equal(rows[i], sample_row(int64_t(i) + 1, model));
  EXPECT_EQ(r.resume_count(), 1);
  EXPECT_EQ(r.check().state, RecordState::completed);
}

TEST_F(RunRecordTest, SigkillMidRunLeavesReadableIncompleteRecord) {
  const ModelInfo model = sample_model();
  int pipe_fd[2];
  ASSERT_EQ(pipe(pipe_fd), 0);
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    close(pipe_fd[0]);
    try {
      RunRecordWriter w = RunRecordWriter::create(path_, sample_run(), model, false);
      for (int64_t step = 1;; ++step) {
        w.append_train(sample_row(step, model));
        if (step % 3 == 0) w.append_eval({step, step * 2048, 4.0});
        if (write(pipe_fd[1], &step, sizeof step) != sizeof step) _exit(3);
      }
    } catch (...) {
      _exit(4);
    }
  }
  close(pipe_fd[1]);
  int64_t reported = 0;
  while (reported < 40) ASSERT_EQ(read(pipe_fd[0], &reported, sizeof reported), ssize_t(sizeof reported));
  // Killed while it keeps appending: somewhere in the middle of an append.
  ASSERT_EQ(kill(child, SIGKILL), 0);
  int wstatus = 0;
  ASSERT_EQ(waitpid(child, &wstatus, 0), child);
  ASSERT_TRUE(WIFSIGNALED(wstatus) && WTERMSIG(wstatus) == SIGKILL);
  close(pipe_fd[0]);

  const RecordCheck c = RunRecordReader::classify(path_);
  EXPECT_EQ(c.state, RecordState::incomplete) << c.reason;
  {
    RunRecordReader r(path_);
    EXPECT_EQ(r.status(), RunStatus::running);
    const auto rows = r.train();
    // Every step the child reported as flushed is there, in order, with its values.
    ASSERT_GE(rows.size(), std::size_t(reported));
    for (std::size_t i = 0; i < rows.size(); ++i) expect_rows_equal(rows[i], sample_row(int64_t(i) + 1, model));
    EXPECT_GE(r.eval().size(), std::size_t(reported / 3));
    EXPECT_EQ(r.run().config_text, sample_run().config_text);
  }  // HDF5 does not reopen a file for writing while this process holds it read-only

  // The trainer can resume it from a checkpoint at step 30 and the rows continue exactly.
  RunRecordWriter w = RunRecordWriter::resume(path_, 30);
  EXPECT_EQ(w.train_rows(), 30u);
  w.append_train(sample_row(31, model));
  EXPECT_EQ(RunRecordReader(path_).train().back().step, 31);
  EXPECT_EQ(RunRecordReader(path_).eval().back().step, 30);
}

TEST_F(RunRecordTest, CompletedRecordIsNotOverwrittenUnlessAsked) {
  const ModelInfo model = sample_model();
  {
    RunRecordWriter w = RunRecordWriter::create(path_, sample_run(), model, false);
    w.append_train(sample_row(1, model));
    w.complete({3.0, 2048, 1e9, 1});
  }
  try {
    RunRecordWriter::create(path_, sample_run(), model, false);
    FAIL() << "overwrote a completed record";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find(path_), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("output.overwrite"), std::string::npos) << e.what();
  }
  EXPECT_EQ(RunRecordReader(path_).status(), RunStatus::completed);
  {
    RunRecordWriter w = RunRecordWriter::create(path_, sample_run(), model, true);
  }
  EXPECT_EQ(RunRecordReader(path_).status(), RunStatus::running);
  EXPECT_TRUE(RunRecordReader(path_).train().empty());
  // A record that never completed is replaced without asking.
  EXPECT_NO_THROW(RunRecordWriter::create(path_, sample_run(), model, false));
}

TEST_F(RunRecordTest, ResumeDropsRowsAfterTheCheckpoint) {
  const ModelInfo model = sample_model();
  {
    RunRecordWriter w = RunRecordWriter::create(path_, sample_run(), model, false);
    for (int64_t step = 10; step <= 100; step += 10) {
      w.append_train(sample_row(step, model));
      if (step % 50 == 0) w.append_eval({step, step * 2048, 4.0 - double(step) / 100});
    }
    w.complete({3.0, 100 * 2048, 1e12, 10});
  }
  {
    RunRecordWriter w = RunRecordWriter::resume(path_, 60);
    RunRecordReader r(path_);
    EXPECT_EQ(r.status(), RunStatus::running);
    EXPECT_FALSE(r.final_values().has_value());
    EXPECT_EQ(r.end_time(), "");
    const auto rows = r.train();
    ASSERT_EQ(rows.size(), 6u);
    EXPECT_EQ(rows.back().step, 60);
    EXPECT_EQ(rows.back().expert_load, sample_row(60, model).expert_load);
    ASSERT_EQ(r.eval().size(), 1u);
    EXPECT_EQ(r.eval()[0].step, 50);
    w.stop(RunStatus::interrupted, "SIGUSR1 before the time limit");
  }
  {
    const RecordCheck c = RunRecordReader::classify(path_);
    EXPECT_EQ(c.state, RecordState::incomplete);
    EXPECT_NE(c.reason.find("SIGUSR1"), std::string::npos) << c.reason;
  }
  {
    RunRecordWriter w = RunRecordWriter::resume(path_, 60);
    for (int64_t step = 70; step <= 100; step += 10) {
      TrainRow row = sample_row(step, model);
      row.loss = 1.0;  // the rerun's losses replace the dropped ones
      w.append_train(row);
    }
    EXPECT_EQ(w.complete({2.0, 100 * 2048, 1e12, 10}).smoothed_train_loss, 1.0);
  }
  RunRecordReader r(path_);
  const auto rows = r.train();
  ASSERT_EQ(rows.size(), 10u);
  EXPECT_EQ(rows[5].loss, sample_row(60, model).loss);
  EXPECT_EQ(rows[6].loss, 1.0);
  EXPECT_EQ(r.resume_count(), 2);
  EXPECT_EQ(r.check().state, RecordState::completed);
}

TEST_F(RunRecordTest, ClassifiesFailedUnreadableAndInconsistentRecords) {
  const ModelInfo model = sample_model();
  {
    RunRecordWriter w = RunRecordWriter::create(path_, sample_run(), model, false);
    w.append_train(sample_row(1, model));
    w.stop(RunStatus::failed, "loss is NaN at step 2");
  }
  RecordCheck c = RunRecordReader::classify(path_);
  EXPECT_EQ(c.state, RecordState::failed);
  EXPECT_NE(c.reason.find("loss is NaN"), std::string::npos) << c.reason;

  const std::string text_file = (dir_ / "notes.h5").string();
  std::ofstream(text_file) << "not hdf5\n";
  c = RunRecordReader::classify(text_file);
  EXPECT_EQ(c.state, RecordState::unreadable);
  EXPECT_NE(c.reason.find(text_file), std::string::npos) << c.reason;
  EXPECT_EQ(RunRecordReader::classify((dir_ / "missing.h5").string()).state, RecordState::unreadable);

  const std::string other = (dir_ / "other.h5").string();
  h5::File::create(other).set("something", int64_t(1));
  EXPECT_EQ(RunRecordReader::classify(other).state, RecordState::unreadable);
  EXPECT_THROW(RunRecordReader{other}, InputError);

  // A completed record whose /train datasets differ in length.
  const std::string ragged = (dir_ / "ragged.h5").string();
  {
    RunRecordWriter w = RunRecordWriter::create(ragged, sample_run(), model, false);
    w.append_train(sample_row(1, model));
    w.complete({3.0, 2048, 1e9, 1});
  }
  {
    h5::File f = h5::File::open(ragged, true);
    f.open_group("train").open_series("loss").append(std::vector<double>{1.0});
  }
  c = RunRecordReader::classify(ragged);
  EXPECT_EQ(c.state, RecordState::inconsistent);
  EXPECT_NE(c.reason.find("differ in length"), std::string::npos) << c.reason;
  EXPECT_THROW(RunRecordWriter::resume(ragged, 1), InputError);

  // A record from a newer format.
  {
    h5::File f = h5::File::open(path_, true);
    f.set(record::kFormatVersionAttr, record::kFormatVersion + 1);
  }
  c = RunRecordReader::classify(path_);
  EXPECT_EQ(c.state, RecordState::inconsistent);
  EXPECT_NE(c.reason.find("format_version"), std::string::npos) << c.reason;
}

TEST(SmoothedTrainLoss, MeansTheLastTenPercentOfSteps) {
  std::vector<int64_t> steps;
  std::vector<double> losses;
  for (int64_t s = 10; s <= 1000; s += 10) {
    steps.push_back(s);
    losses.push_back(double(s));
  }
  EXPECT_DOUBLE_EQ(smoothed_train_loss(steps, losses), 955.0);  // mean of 910..1000
  EXPECT_DOUBLE_EQ(smoothed_train_loss({7}, {2.5}), 2.5);
  EXPECT_TRUE(std::isnan(smoothed_train_loss({}, {})));
}

}  // namespace
}  // namespace finemoe
