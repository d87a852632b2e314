#pragma once
// The HDF5 run record every training run leaves behind (schema: docs/run-record.md).
// RunRecordWriter is used by rank 0 of the trainer, RunRecordReader by the analysis; both take
// their names from run_record_schema.h and the field tables in run_record.cpp.
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace finemoe {

enum class RunStatus { running, completed, interrupted, failed };
std::string to_string(RunStatus status);

// Root attributes and /meta: where and how the run ran.
struct RunInfo {
  std::string command_line;
  std::vector<std::pair<std::string, std::string>> config;  // finemoe::config_items(cfg)
  std::string config_text;                                  // the parameter file as read
  int64_t world_size = 1;
  int64_t expert_parallel = 1;
  int64_t data_parallel = 1;
  std::string backend;  // "cpu" | "cuda"
  bool moe_enabled = true;
  std::vector<std::string> rank_hosts;    // one per rank
  std::vector<std::string> rank_devices;  // one per rank
  // Names of the per-phase times the rows will carry (/train/phase_times), created with the
  // record so that the first row only appends; names not given here may still start with the first row.
  std::vector<std::string> phase_names;
};

// /model attributes. N_total is the paper's N: non-embedding parameters, router excluded.
struct ModelInfo {
  int64_t N_total = 0;
  int64_t N_active = 0;
  int64_t N_embedding = 0;
  int64_t N_router = 0;
  int64_t d_model = 0;
  int64_t n_blocks = 0;
  int64_t n_heads = 0;
  int64_t E = 0;
  int64_t G = 0;
  int64_t n_experts = 0;  // 0 for a dense model
  int64_t d_expert = 0;
  int64_t top_k = 0;
  std::string routing;
  int64_t vocab = 0;
  int64_t context = 0;
  double flops_per_token = 0;          // the paper's formula (Eq. 10 per token)
  double flops_per_token_counted = 0;  // counted by the implementation
};

// One /train row, written every output.log_interval steps.
struct TrainRow {
  int64_t step = 0;
  int64_t tokens = 0;  // tokens seen so far
  double loss = 0;
  double lr = 0;
  double grad_norm = 0;
  double aux_loss = 0;
  double step_time_s = 0;
  double tokens_per_s = 0;
  double alltoall_time_s = 0;
  int64_t alltoall_bytes = 0;
  double expert_gemm_time_s = 0;
  double dropped_fraction = 0;
  // Further per-phase times a backend measures; the names are fixed by the first row.
  std::vector<std::pair<std::string, double>> phase_times;
  // Tokens per (block, expert), row-major n_blocks x n_experts; empty for dense records.
  std::vector<int64_t> expert_load;
  // Per block: max / mean of its expert_load (1 = balanced; 0 for a block without tokens); MoE
  // only. Filled when read (empty from a record written before it existed); the writer derives it
  // from expert_load and ignores this field.
  std::vector<double> load_imbalance;
};

struct EvalRow {
  int64_t step = 0;
  int64_t tokens = 0;
  double loss = 0;
};

// What the trainer knows at the end of a run.
struct RunResult {
  double eval_loss = 0;
  int64_t tokens = 0;  // D
  double flops = 0;
  double wall_time_s = 0;
};

// /final attributes: RunResult plus the smoothed training loss the writer computes.
struct FinalInfo {
  double eval_loss = 0;
  double smoothed_train_loss = 0;
  int64_t tokens = 0;
  double flops = 0;
  double wall_time_s = 0;
};

// Mean training loss over the rows in the last 10% of steps (step > 0.9 x the last step).
double smoothed_train_loss(const std::vector<int64_t>& steps, const std::vector<double>& losses);

namespace h5 {
class File;
}

class RunRecordWriter {
 public:
  // Starts a new record (status running), built under <path>.tmp and renamed into place once
  // flushed and fsynced (a stale <path>.tmp is removed first). An existing completed record is
  // replaced only when overwrite is true; an existing file that is not a readable record of
  // format 1 is never replaced. Both refusals are an InputError naming the file.
  static RunRecordWriter create(const std::string& path, const RunInfo& run, const ModelInfo& model,
                                bool overwrite);
  // Reopens a record after a restart from the checkpoint at checkpoint_step: rows with a larger
  // step are dropped (so appending again is exact), /final is removed, status is running again.
  // The changes are made on a copy that replaces the record in one rename.
  static RunRecordWriter resume(const std::string& path, int64_t checkpoint_step);

  RunRecordWriter(RunRecordWriter&&) noexcept;
  RunRecordWriter& operator=(RunRecordWriter&&) noexcept;
  ~RunRecordWriter();

  // Each append is flushed to disk before it returns. An append that allocates storage (the
  // first row of a chunk) is made on a copy renamed into place, as are complete() and stop().
  void append_train(const TrainRow& row);
  void append_eval(const EvalRow& row);
  // Writes /final, end_time and status completed.
  FinalInfo complete(const RunResult& result);
  // Marks the run interrupted (it can resume) or failed, with a reason a person can read.
  void stop(RunStatus status, const std::string& reason);

  const std::string& path() const;
  std::size_t train_rows() const;
  // The newest /eval row, if any.
  std::optional<EvalRow> last_eval() const;

 private:
  struct State;
  explicit RunRecordWriter(std::unique_ptr<State> state);
  // Applies `change` to a copy of the record and renames the copy into place.
  void rewrite(const std::function<void(State&)>& change);
  std::unique_ptr<State> state_;
};

enum class RecordState { completed, incomplete, failed, unreadable, inconsistent };
std::string to_string(RecordState state);

struct RecordCheck {
  RecordState state = RecordState::unreadable;
  std::string reason;  // empty for completed records
};

class RunRecordReader {
 public:
  // Throws InputError naming the file when it is missing, not HDF5 or not a run record.
  explicit RunRecordReader(const std::string& path);
  RunRecordReader(RunRecordReader&&) noexcept;
  ~RunRecordReader();

  const std::string& path() const;
  int64_t format_version() const;
  std::string finemoe_version() const;
  std::string git_commit() const;
  std::string start_time() const;
  std::string end_time() const;  // empty while running
  RunStatus status() const;
  std::string status_reason() const;
  int64_t resume_count() const;
  RunInfo run() const;
  ModelInfo model() const;
  std::vector<TrainRow> train() const;
  std::vector<EvalRow> eval() const;
  std::optional<FinalInfo> final_values() const;

  // Completed, incomplete (running, i.e. killed, or interrupted), failed or inconsistent; with
  // the reason. Reading problems inside the file count as inconsistent.
  RecordCheck check() const;
  // As check(), and unreadable when the file cannot be opened as a record. Never throws.
  static RecordCheck classify(const std::string& path);

 private:
  std::unique_ptr<h5::File> file_;
};

// Per block, max / mean of the block's row of `expert_load` ([n_blocks x n_experts]); 0 for a
// block that received no token. Empty when the sizes do not divide.
std::vector<double> load_imbalance(const std::vector<int64_t>& expert_load, std::size_t n_blocks);

}  // namespace finemoe
