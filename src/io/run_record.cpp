#include "io/run_record.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <numeric>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <chrono>
#include <cmath>
#include <ctime>
#include <set>

#include "finemoe/version.h"
#include "io/h5.h"
#include "io/run_record_schema.h"
#include "util/check.h"

namespace finemoe {
namespace {

using namespace record;

// The field tables: each schema name paired with its struct member. Writer and reader both
// walk these tables, so a field cannot be written under one name and read under another.
struct ModelIntField {
  const char* name;
  int64_t ModelInfo::*member;
};
constexpr ModelIntField kModelInt[] = {
    {"N_total", &ModelInfo::N_total},   {"N_active", &ModelInfo::N_active},
    {"N_embedding", &ModelInfo::N_embedding}, {"N_router", &ModelInfo::N_router},
    {"d_model", &ModelInfo::d_model},   {"n_blocks", &ModelInfo::n_blocks},
    {"n_heads", &ModelInfo::n_heads},   {"E", &ModelInfo::E},
    {"G", &ModelInfo::G},               {"n_experts", &ModelInfo::n_experts},
    {"d_expert", &ModelInfo::d_expert}, {"top_k", &ModelInfo::top_k},
    {"vocab", &ModelInfo::vocab},       {"context", &ModelInfo::context}};
struct ModelDoubleField {
  const char* name;
  double ModelInfo::*member;
};
constexpr ModelDoubleField kModelDouble[] = {
    {"flops_per_token", &ModelInfo::flops_per_token},
    {"flops_per_token_counted", &ModelInfo::flops_per_token_counted}};
constexpr const char* kRoutingAttr = "routing";

struct TrainIntField {
  const char* name;
  int64_t TrainRow::*member;
};
constexpr TrainIntField kTrainInt[] = {{"step", &TrainRow::step},
                                       {"tokens", &TrainRow::tokens},
                                       {"alltoall_bytes", &TrainRow::alltoall_bytes}};
struct TrainDoubleField {
  const char* name;
  double TrainRow::*member;
};
constexpr TrainDoubleField kTrainDouble[] = {
    {"loss", &TrainRow::loss},
    {"lr", &TrainRow::lr},
    {"grad_norm", &TrainRow::grad_norm},
    {"aux_loss", &TrainRow::aux_loss},
    {"step_time_s", &TrainRow::step_time_s},
    {"tokens_per_s", &TrainRow::tokens_per_s},
    {"alltoall_time_s", &TrainRow::alltoall_time_s},
    {"expert_gemm_time_s", &TrainRow::expert_gemm_time_s},
    {"dropped_fraction", &TrainRow::dropped_fraction}};

constexpr const char* kEvalStep = "step";
constexpr const char* kEvalTokens = "tokens";
constexpr const char* kEvalLoss = "loss";

struct FinalDoubleField {
  const char* name;
  double FinalInfo::*member;
};
constexpr FinalDoubleField kFinalDouble[] = {{kEvalLossAttr, &FinalInfo::eval_loss},
                                             {kSmoothedTrainLossAttr, &FinalInfo::smoothed_train_loss},
                                             {kFlopsAttr, &FinalInfo::flops},
                                             {kWallTimeAttr, &FinalInfo::wall_time_s}};

std::string utc_now() {
  const std::time_t now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

RunStatus parse_status(const std::string& text, const std::string& where) {
  for (RunStatus s : {RunStatus::running, RunStatus::completed, RunStatus::interrupted, RunStatus::failed}) {
    if (to_string(s) == text) return s;
  }
  throw InputError(where + ": status '" + text + "' is not running, completed, interrupted or failed");
}

bool file_exists(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0;
}

// The name a record is built or changed under before it replaces `path` in one rename.
std::string temporary_name(const std::string& path) { return path + ".tmp"; }

void fsync_or_throw(const std::string& path, int flags) {
  const int fd = ::open(path.c_str(), flags | O_CLOEXEC);
  if (fd < 0) throw RuntimeFailure("cannot open " + path + " to sync it: " + std::strerror(errno));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0) throw RuntimeFailure("cannot fsync " + path + ": " + std::strerror(err));
}

// Makes the finished (closed) temporary durable and puts it in place of `path` atomically: a kill
// at any moment leaves either the old file or the new one, never a half-written record.
void commit_temporary(const std::string& tmp, const std::string& path) {
  fsync_or_throw(tmp, O_RDONLY);
  if (std::rename(tmp.c_str(), path.c_str()) != 0)
    throw RuntimeFailure("cannot rename " + tmp + " to " + path + ": " + std::strerror(errno));
  const std::string parent = std::filesystem::path(path).parent_path().string();
  fsync_or_throw(parent.empty() ? "." : parent, O_RDONLY | O_DIRECTORY);
}

}  // namespace

std::string to_string(RunStatus status) {
  switch (status) {
    case RunStatus::running: return "running";
    case RunStatus::completed: return "completed";
    case RunStatus::interrupted: return "interrupted";
    case RunStatus::failed: return "failed";
  }
  return "?";
}

std::string to_string(RecordState state) {
  switch (state) {
    case RecordState::completed: return "completed";
    case RecordState::incomplete: return "incomplete";
    case RecordState::failed: return "failed";
    case RecordState::unreadable: return "unreadable";
    case RecordState::inconsistent: return "inconsistent";
  }
  return "?";
}

double smoothed_train_loss(const std::vector<int64_t>& steps, const std::vector<double>& losses) {
  FINEMOE_CHECK(steps.size() == losses.size(), "steps and losses differ in length");
  if (steps.empty()) return std::nan("");
  const double threshold = (1.0 - kSmoothingFraction) * double(steps.back());
  double sum = 0;
  int count = 0;
  for (std::size_t i = 0; i < steps.size(); ++i) {
    if (double(steps[i]) > threshold || i + 1 == steps.size()) {
      sum += losses[i];
      ++count;
    }
  }
  return sum / count;
}

// ---------------------------------------------------------------------------------- writer

struct RunRecordWriter::State {
  h5::File file;
  std::vector<h5::Series> train_int;     // kTrainInt order
  std::vector<h5::Series> train_double;  // kTrainDouble order
  std::vector<std::string> phase_names;  // sorted
  std::vector<h5::Series> phase_series;  // phase_names order
  std::optional<h5::Series> expert_load;
  std::optional<h5::Series> load_imbalance;  // absent in records written before issue 20
  std::vector<h5::Series> eval;  // step, tokens, loss

  explicit State(h5::File f) : file(std::move(f)) {}

  void open_series() {
    const h5::Group train = file.open_group(kTrainGroup);
    for (const auto& f : kTrainInt) train_int.push_back(train.open_series(f.name));
    for (const auto& f : kTrainDouble) train_double.push_back(train.open_series(f.name));
    const h5::Group phases = train.open_group(kPhaseTimesGroup);
    for (const auto& name : phases.child_names()) {
      phase_names.push_back(name);
      phase_series.push_back(phases.open_series(name));
    }
    if (train.has_child(kExpertLoadDataset)) expert_load = train.open_series(kExpertLoadDataset);
    if (train.has_child(kLoadImbalanceDataset)) load_imbalance = train.open_series(kLoadImbalanceDataset);
    const h5::Group ev = file.open_group(kEvalGroup);
    for (const char* name : {kEvalStep, kEvalTokens, kEvalLoss}) eval.push_back(ev.open_series(name));
  }
};

RunRecordWriter::RunRecordWriter(std::unique_ptr<State> state) : state_(std::move(state)) {}
RunRecordWriter::RunRecordWriter(RunRecordWriter&&) noexcept = default;
RunRecordWriter& RunRecordWriter::operator=(RunRecordWriter&&) noexcept = default;
RunRecordWriter::~RunRecordWriter() = default;

const std::string& RunRecordWriter::path() const { return state_->file.path(); }
std::size_t RunRecordWriter::train_rows() const { return state_->train_int[0].rows(); }

RunRecordWriter RunRecordWriter::create(const std::string& path, const RunInfo& run,
                                        const ModelInfo& model, bool overwrite) {
  if (file_exists(path)) {
    // Only a run record may be replaced, a completed one only when asked: anything else
    // (another file, a damaged record) is the user's to keep.
    const RecordCheck check = RunRecordReader::classify(path);
    if (check.state == RecordState::unreadable || check.state == RecordState::inconsistent) {
      throw InputError(path + ": exists and is not a run record this run may replace (" + check.reason +
                       "); move it away or choose another output.dir");
    }
    if (check.state == RecordState::completed && !overwrite) {
      throw InputError(path + ": a completed run record already exists; choose another output.dir "
                              "or set output.overwrite = true to replace it");
    }
  }
  const bool moe = run.moe_enabled && model.n_experts > 0;
  if (run.moe_enabled) {
    FINEMOE_CHECK(model.n_experts > 0 && model.n_blocks > 0,
                  path << ": an MoE record needs n_experts and n_blocks");
  }
  const std::string tmp = temporary_name(path);
  std::remove(tmp.c_str());  // left by a kill during an earlier creation
  {
    h5::File f = h5::File::create(tmp);
    f.set(kFormatVersionAttr, kFormatVersion);
    f.set(kVersionAttr, kVersion);
    f.set(kGitCommitAttr, kGitCommit);
    f.set(kCommandLineAttr, run.command_line);
    for (const auto& [key, value] : run.config) f.set(std::string(kConfigPrefix) + key, value);
    f.set(kStartTimeAttr, utc_now());
    f.set(kEndTimeAttr, "");
    f.set(kWorldSizeAttr, run.world_size);
    f.set(kExpertParallelAttr, run.expert_parallel);
    f.set(kDataParallelAttr, run.data_parallel);
    f.set(kBackendAttr, run.backend);
    f.set(kMoeEnabledAttr, int64_t(run.moe_enabled ? 1 : 0));
    f.set(kStatusAttr, to_string(RunStatus::running));
    f.set(kStatusReasonAttr, "");
    f.set(kResumeCountAttr, int64_t(0));

    h5::Group meta = f.create_group(kMetaGroup);
    meta.write_text(kConfigTextDataset, run.config_text);
    meta.write_strings(kRankHostsDataset, run.rank_hosts);
    meta.write_strings(kRankDevicesDataset, run.rank_devices);

    h5::Group m = f.create_group(kModelGroup);
    for (const auto& field : kModelInt) m.set(field.name, model.*field.member);
    for (const auto& field : kModelDouble) m.set(field.name, model.*field.member);
    m.set(kRoutingAttr, model.routing);

    h5::Group train = f.create_group(kTrainGroup);
    for (const auto& field : kTrainInt) train.create_series(field.name, h5::Type::int64);
    for (const auto& field : kTrainDouble) train.create_series(field.name, h5::Type::float64);
    h5::Group phases = train.create_group(kPhaseTimesGroup);
    std::vector<std::string> names = run.phase_names;
    std::sort(names.begin(), names.end());
    for (const auto& name : names) {
      FINEMOE_CHECK(!name.empty() && name.find('/') == std::string::npos && !phases.has_child(name),
                    path << ": bad or repeated phase name '" << name << "'");
      phases.create_series(name, h5::Type::float64);
    }
    if (moe) {
      train.create_series(kExpertLoadDataset, h5::Type::int64,
                          {hsize_t(model.n_blocks), hsize_t(model.n_experts)}, 16);
      train.create_series(kLoadImbalanceDataset, h5::Type::float64, {hsize_t(model.n_blocks)}, 16);
    }
    h5::Group ev = f.create_group(kEvalGroup);
    ev.create_series(kEvalStep, h5::Type::int64);
    ev.create_series(kEvalTokens, h5::Type::int64);
    ev.create_series(kEvalLoss, h5::Type::float64);
    f.flush();
  }
  commit_temporary(tmp, path);
  auto state = std::make_unique<State>(h5::File::open(path, true));
  state->open_series();
  return RunRecordWriter(std::move(state));
}

RunRecordWriter RunRecordWriter::resume(const std::string& path, int64_t checkpoint_step) {
  {
    const RecordCheck check = RunRecordReader::classify(path);
    if (check.state == RecordState::unreadable || check.state == RecordState::inconsistent) {
      throw InputError(path + ": cannot resume this run record: " + check.reason);
    }
  }
  // The rows are cut on a copy that replaces the record in one rename, so a kill meanwhile
  // leaves the record as it was.
  const std::string tmp = temporary_name(path);
  std::remove(tmp.c_str());
  std::error_code ec;
  std::filesystem::copy_file(path, tmp, ec);
  if (ec) throw RuntimeFailure("cannot copy " + path + " to " + tmp + ": " + ec.message());
  {
    State state(h5::File::open(tmp, true));
    h5::File& f = state.file;
    state.open_series();

    // Steps increase along the rows, so the rows to keep are a prefix.
    const auto keep_prefix = [checkpoint_step](const std::vector<int64_t>& steps) {
      return std::size_t(std::upper_bound(steps.begin(), steps.end(), checkpoint_step) - steps.begin());
    };
    // A kill between two datasets' appends leaves a row in some only: rows complete in every
    // dataset are kept, so the datasets are even again.
    std::size_t train_keep = keep_prefix(state.train_int[0].read_int64());
    for (auto* group : {&state.train_int, &state.train_double, &state.phase_series})
      for (auto& s : *group) train_keep = std::min(train_keep, s.rows());
    if (state.expert_load) train_keep = std::min(train_keep, state.expert_load->rows());
    if (state.load_imbalance) train_keep = std::min(train_keep, state.load_imbalance->rows());
    for (auto* group : {&state.train_int, &state.train_double, &state.phase_series})
      for (auto& s : *group) s.resize(train_keep);
    if (state.expert_load) state.expert_load->resize(train_keep);
    if (state.load_imbalance) state.load_imbalance->resize(train_keep);
    std::size_t eval_keep = keep_prefix(state.eval[0].read_int64());
    for (auto& s : state.eval) eval_keep = std::min(eval_keep, s.rows());
    for (auto& s : state.eval) s.resize(eval_keep);

    f.remove_child(kFinalGroup);
    f.set(kStatusAttr, to_string(RunStatus::running));
    f.set(kStatusReasonAttr, "");
    f.set(kEndTimeAttr, "");
    f.set(kResumeCountAttr, f.get_int64(kResumeCountAttr) + 1);
    f.flush();
  }
  commit_temporary(tmp, path);
  auto state = std::make_unique<State>(h5::File::open(path, true));
  state->open_series();
  return RunRecordWriter(std::move(state));
}

// Changes that allocate (a series' first chunk, a new group, new attributes) are not safe in
// place: a kill in the middle of their flush can leave a file that does not open. They are made
// on a copy that replaces the record in one rename; appends within allocated chunks are in place.
void RunRecordWriter::rewrite(const std::function<void(State&)>& change) {
  const std::string path = state_->file.path();
  state_.reset();  // closes the record
  const std::string tmp = temporary_name(path);
  std::remove(tmp.c_str());
  std::error_code ec;
  std::filesystem::copy_file(path, tmp, ec);
  if (ec) throw RuntimeFailure("cannot copy " + path + " to " + tmp + ": " + ec.message());
  {
    State copy(h5::File::open(tmp, true));
    copy.open_series();
    change(copy);
    copy.file.flush();
  }
  commit_temporary(tmp, path);
  state_ = std::make_unique<State>(h5::File::open(path, true));
  state_->open_series();
}

std::optional<EvalRow> RunRecordWriter::last_eval() const {
  const State& s = *state_;
  const std::size_t n = std::min({s.eval[0].rows(), s.eval[1].rows(), s.eval[2].rows()});
  if (n == 0) return std::nullopt;
  return EvalRow{s.eval[0].read_int64()[n - 1], s.eval[1].read_int64()[n - 1], s.eval[2].read_double()[n - 1]};
}

void RunRecordWriter::append_train(const TrainRow& row) {
  State& s = *state_;
  std::vector<std::pair<std::string, double>> phases = row.phase_times;
  std::sort(phases.begin(), phases.end());
  if (s.phase_names.empty() && !phases.empty()) {
    if (train_rows() > 0) {
      throw RuntimeFailure(path() + ": phase times appear after rows were written without them");
    }
    h5::Group group = s.file.open_group(kTrainGroup).open_group(kPhaseTimesGroup);
    for (const auto& [name, value] : phases) {
      FINEMOE_CHECK(!name.empty() && name.find('/') == std::string::npos && !group.has_child(name),
                    path() << ": bad or repeated phase name '" << name << "'");
      s.phase_names.push_back(name);
      s.phase_series.push_back(group.create_series(name, h5::Type::float64));
    }
  }
  FINEMOE_CHECK(phases.size() == s.phase_names.size(),
                path() << ": a row has " << phases.size() << " phase times, the record has "
                       << s.phase_names.size());
  for (std::size_t i = 0; i < phases.size(); ++i) {
    FINEMOE_CHECK(phases[i].first == s.phase_names[i],
                  path() << ": phase '" << phases[i].first << "' is not one of the record's phases");
  }
  if (s.expert_load) {
    FINEMOE_CHECK(row.expert_load.size() == s.expert_load->row_size(),
                  path() << ": expert_load has " << row.expert_load.size() << " counts, expected "
                         << s.expert_load->row_size() << " (n_blocks x n_experts)");
  } else {
    FINEMOE_CHECK(row.expert_load.empty(), path() << ": expert_load given for a dense record");
  }
  // Derived here from expert_load, so every writer logs it the same way (row.load_imbalance is ignored).
  const std::vector<double> imbalance =
      s.load_imbalance ? load_imbalance(row.expert_load, s.load_imbalance->row_size()) : std::vector<double>{};
  if (train_rows() > 0) {
    const std::vector<int64_t> steps = s.train_int[0].read_int64();
    FINEMOE_CHECK(row.step > steps.back(),
                  path() << ": step " << row.step << " does not follow step " << steps.back());
  }
  const auto append = [&row, &phases, &imbalance](State& t) {
    for (std::size_t i = 0; i < std::size(kTrainInt); ++i) t.train_int[i].append_one(row.*kTrainInt[i].member);
    for (std::size_t i = 0; i < std::size(kTrainDouble); ++i) {
      t.train_double[i].append_one(row.*kTrainDouble[i].member);
    }
    for (std::size_t i = 0; i < phases.size(); ++i) t.phase_series[i].append_one(phases[i].second);
    if (t.expert_load) t.expert_load->append(row.expert_load);
    if (t.load_imbalance) t.load_imbalance->append(imbalance);
  };
  bool allocates = s.train_int[0].rows() % s.train_int[0].chunk_rows() == 0;
  for (const auto& series : s.phase_series) allocates = allocates || series.rows() % series.chunk_rows() == 0;
  if (s.expert_load) allocates = allocates || s.expert_load->rows() % s.expert_load->chunk_rows() == 0;
  if (s.load_imbalance) allocates = allocates || s.load_imbalance->rows() % s.load_imbalance->chunk_rows() == 0;
  if (allocates) {
    rewrite(append);
  } else {
    append(s);
    s.file.flush();
  }
}

void RunRecordWriter::append_eval(const EvalRow& row) {
  const auto append = [&row](State& t) {
    t.eval[0].append_one(row.step);
    t.eval[1].append_one(row.tokens);
    t.eval[2].append_one(row.loss);
  };
  State& s = *state_;
  if (s.eval[0].rows() % s.eval[0].chunk_rows() == 0) {
    rewrite(append);
  } else {
    append(s);
    s.file.flush();
  }
}

FinalInfo RunRecordWriter::complete(const RunResult& result) {
  State& s = *state_;
  FinalInfo fin;
  fin.eval_loss = result.eval_loss;
  fin.smoothed_train_loss = smoothed_train_loss(s.train_int[0].read_int64(), s.train_double[0].read_double());
  fin.tokens = result.tokens;
  fin.flops = result.flops;
  fin.wall_time_s = result.wall_time_s;
  rewrite([&fin](State& t) {
    t.file.remove_child(kFinalGroup);
    h5::Group g = t.file.create_group(kFinalGroup);
    for (const auto& field : kFinalDouble) g.set(field.name, fin.*field.member);
    g.set(kTokensAttr, fin.tokens);
    t.file.set(kEndTimeAttr, utc_now());
    t.file.set(kStatusAttr, to_string(RunStatus::completed));
    t.file.set(kStatusReasonAttr, "");
  });
  return fin;
}

void RunRecordWriter::stop(RunStatus status, const std::string& reason) {
  FINEMOE_CHECK(status == RunStatus::interrupted || status == RunStatus::failed,
                "stop() takes interrupted or failed, not " << to_string(status));
  rewrite([&](State& t) {
    t.file.set(kEndTimeAttr, utc_now());
    t.file.set(kStatusAttr, to_string(status));
    t.file.set(kStatusReasonAttr, reason);
  });
}

// ---------------------------------------------------------------------------------- reader

RunRecordReader::RunRecordReader(const std::string& path)
    : file_(std::make_unique<h5::File>(h5::File::open(path, false))) {
  if (!file_->has_attribute(kFormatVersionAttr)) {
    throw InputError(path + ": not a finemoe run record (no " + std::string(kFormatVersionAttr) +
                     " attribute)");
  }
}

RunRecordReader::RunRecordReader(RunRecordReader&&) noexcept = default;
RunRecordReader::~RunRecordReader() = default;

const std::string& RunRecordReader::path() const { return file_->path(); }
int64_t RunRecordReader::format_version() const { return file_->get_int64(kFormatVersionAttr); }
std::string RunRecordReader::finemoe_version() const { return file_->get_string(kVersionAttr); }
std::string RunRecordReader::git_commit() const { return file_->get_string(kGitCommitAttr); }
std::string RunRecordReader::start_time() const { return file_->get_string(kStartTimeAttr); }
std::string RunRecordReader::end_time() const { return file_->get_string(kEndTimeAttr); }
std::string RunRecordReader::status_reason() const { return file_->get_string(kStatusReasonAttr); }
int64_t RunRecordReader::resume_count() const { return file_->get_int64(kResumeCountAttr); }

RunStatus RunRecordReader::status() const {
  return parse_status(file_->get_string(kStatusAttr), path());
}

RunInfo RunRecordReader::run() const {
  const h5::File& f = *file_;
  RunInfo info;
  info.command_line = f.get_string(kCommandLineAttr);
  const std::string prefix = kConfigPrefix;
  for (const auto& name : f.attribute_names()) {
    if (name.compare(0, prefix.size(), prefix) == 0) {
      info.config.emplace_back(name.substr(prefix.size()), f.get_string(name));
    }
  }
  info.world_size = f.get_int64(kWorldSizeAttr);
  info.expert_parallel = f.get_int64(kExpertParallelAttr);
  info.data_parallel = f.get_int64(kDataParallelAttr);
  info.backend = f.get_string(kBackendAttr);
  info.moe_enabled = f.get_int64(kMoeEnabledAttr) != 0;
  const h5::Group meta = f.open_group(kMetaGroup);
  info.config_text = meta.read_text(kConfigTextDataset);
  info.rank_hosts = meta.read_strings(kRankHostsDataset);
  info.rank_devices = meta.read_strings(kRankDevicesDataset);
  info.phase_names = f.open_group(kTrainGroup).open_group(kPhaseTimesGroup).child_names();
  return info;
}

std::vector<double> load_imbalance(const std::vector<int64_t>& expert_load, std::size_t n_blocks) {
  std::vector<double> out;
  if (n_blocks == 0 || expert_load.size() % n_blocks != 0) return out;
  const std::size_t n_experts = expert_load.size() / n_blocks;
  for (std::size_t b = 0; b < n_blocks; ++b) {
    const auto first = expert_load.begin() + std::ptrdiff_t(b * n_experts);
    const int64_t total = std::accumulate(first, first + std::ptrdiff_t(n_experts), int64_t(0));
    const int64_t most = n_experts > 0 ? *std::max_element(first, first + std::ptrdiff_t(n_experts)) : 0;
    out.push_back(total > 0 ? double(most) * double(n_experts) / double(total) : 0.0);
  }
  return out;
}

ModelInfo RunRecordReader::model() const {
  const h5::Group g = file_->open_group(kModelGroup);
  ModelInfo m;
  for (const auto& field : kModelInt) m.*field.member = g.get_int64(field.name);
  for (const auto& field : kModelDouble) m.*field.member = g.get_double(field.name);
  m.routing = g.get_string(kRoutingAttr);
  return m;
}

std::vector<TrainRow> RunRecordReader::train() const {
  const h5::Group g = file_->open_group(kTrainGroup);
  std::vector<std::vector<int64_t>> ints;
  std::vector<std::vector<double>> doubles;
  for (const auto& f : kTrainInt) ints.push_back(g.open_series(f.name).read_int64());
  for (const auto& f : kTrainDouble) doubles.push_back(g.open_series(f.name).read_double());
  const h5::Group pg = g.open_group(kPhaseTimesGroup);
  const std::vector<std::string> phase_names = pg.child_names();
  std::vector<std::vector<double>> phases;
  for (const auto& name : phase_names) phases.push_back(pg.open_series(name).read_double());
  std::vector<int64_t> load;
  std::size_t load_row = 0;
  if (g.has_child(kExpertLoadDataset)) {
    const h5::Series s = g.open_series(kExpertLoadDataset);
    load = s.read_int64();
    load_row = s.row_size();
  }
  std::vector<double> imbalance;
  std::size_t imbalance_row = 0;
  if (g.has_child(kLoadImbalanceDataset)) {
    const h5::Series s = g.open_series(kLoadImbalanceDataset);
    imbalance = s.read_double();
    imbalance_row = s.row_size();
  }
  // A record killed between two datasets' appends may hold one more value in some of them:
  // the rows are those complete in every dataset.
  std::size_t n = ints[0].size();
  for (const auto& v : ints) n = std::min(n, v.size());
  for (const auto& v : doubles) n = std::min(n, v.size());
  for (const auto& v : phases) n = std::min(n, v.size());
  if (load_row > 0) n = std::min(n, load.size() / load_row);
  if (imbalance_row > 0) n = std::min(n, imbalance.size() / imbalance_row);

  std::vector<TrainRow> rows(n);
  for (std::size_t r = 0; r < n; ++r) {
    for (std::size_t i = 0; i < ints.size(); ++i) rows[r].*kTrainInt[i].member = ints[i][r];
    for (std::size_t i = 0; i < doubles.size(); ++i) rows[r].*kTrainDouble[i].member = doubles[i][r];
    for (std::size_t i = 0; i < phases.size(); ++i) rows[r].phase_times.emplace_back(phase_names[i], phases[i][r]);
    if (load_row > 0) {
      rows[r].expert_load.assign(load.begin() + r * load_row, load.begin() + (r + 1) * load_row);
    }
    if (imbalance_row > 0) {
      rows[r].load_imbalance.assign(imbalance.begin() + r * imbalance_row, imbalance.begin() + (r + 1) * imbalance_row);
    }
  }
  return rows;
}

std::vector<EvalRow> RunRecordReader::eval() const {
  const h5::Group g = file_->open_group(kEvalGroup);
  const auto steps = g.open_series(kEvalStep).read_int64();
  const auto tokens = g.open_series(kEvalTokens).read_int64();
  const auto losses = g.open_series(kEvalLoss).read_double();
  const std::size_t n = std::min({steps.size(), tokens.size(), losses.size()});
  std::vector<EvalRow> rows(n);
  for (std::size_t i = 0; i < n; ++i) rows[i] = {steps[i], tokens[i], losses[i]};
  return rows;
}

std::optional<FinalInfo> RunRecordReader::final_values() const {
  if (!file_->has_child(kFinalGroup)) return std::nullopt;
  const h5::Group g = file_->open_group(kFinalGroup);
  FinalInfo fin;
  for (const auto& field : kFinalDouble) fin.*field.member = g.get_double(field.name);
  fin.tokens = g.get_int64(kTokensAttr);
  return fin;
}

RecordCheck RunRecordReader::check() const {
  try {
    const int64_t version = format_version();
    if (version != kFormatVersion) {
      return {RecordState::inconsistent, "format_version " + std::to_string(version) +
                                             ", this finemoe reads " + std::to_string(kFormatVersion)};
    }
    const RunStatus st = status();
    const RunInfo info = run();
    const ModelInfo m = model();
    const std::vector<TrainRow> rows = train();
    eval();
    // A kill between two datasets' appends may leave one dataset a row longer; only a
    // completed record must be even.
    const h5::Group g = file_->open_group(kTrainGroup);
    std::size_t longest = 0;
    for (const auto& f : kTrainInt) longest = std::max(longest, g.open_series(f.name).rows());
    for (const auto& f : kTrainDouble) longest = std::max(longest, g.open_series(f.name).rows());
    if (st == RunStatus::completed && longest != rows.size()) {
      return {RecordState::inconsistent, "/train datasets differ in length (" + std::to_string(rows.size()) +
                                             " to " + std::to_string(longest) + " rows)"};
    }
    for (std::size_t i = 1; i < rows.size(); ++i) {
      if (rows[i].step <= rows[i - 1].step) {
        return {RecordState::inconsistent, "/train/step does not increase at row " + std::to_string(i)};
      }
    }
    if (info.moe_enabled && (m.E <= 0 || m.G <= 0 || m.n_experts != m.E * m.G)) {
      return {RecordState::inconsistent, "MoE record with E=" + std::to_string(m.E) + ", G=" +
                                             std::to_string(m.G) + ", n_experts=" + std::to_string(m.n_experts)};
    }
    const std::string last = rows.empty() ? "no steps logged" : "last step " + std::to_string(rows.back().step);
    switch (st) {
      case RunStatus::running:
        return {RecordState::incomplete, "status running: killed or still going (" + last + ")"};
      case RunStatus::interrupted:
        return {RecordState::incomplete, "interrupted (" + last + "): " + status_reason()};
      case RunStatus::failed:
        return {RecordState::failed, "failed (" + last + "): " + status_reason()};
      case RunStatus::completed: break;
    }
    const std::optional<FinalInfo> fin = final_values();
    if (!fin) return {RecordState::inconsistent, "status completed but no /final"};
    if (fin->tokens <= 0) return {RecordState::inconsistent, "/final tokens = " + std::to_string(fin->tokens)};
    if (m.N_total <= 0) return {RecordState::inconsistent, "/model N_total = " + std::to_string(m.N_total)};
    return {RecordState::completed, ""};
  } catch (const std::exception& e) {
    return {RecordState::inconsistent, e.what()};
  }
}

RecordCheck RunRecordReader::classify(const std::string& path) {
  try {
    return RunRecordReader(path).check();
  } catch (const std::exception& e) {
    return {RecordState::unreadable, e.what()};
  }
}

}  // namespace finemoe
