#include "train/trainer.h"

#include <omp.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <sstream>

#include "backend/compute.h"
#include "backend/cpu/blas.h"
#include "checkpoint/checkpoint.h"
#include "data/batch_sampler.h"
#include "data/token_dataset.h"
#include "io/run_record.h"
#include "parallel/agreement.h"
#include "parallel/watchdog.h"
#include "train/compute_setup.h"
#include "train/engine.h"
#include "train/exit_codes.h"
#include "train/lr_schedule.h"
#include "train/memory_budget.h"
#include "train/progress.h"
#include "train/stop_signal.h"
#include "train/train_state.h"
#include "util/check.h"

namespace fs = std::filesystem;

namespace finemoe {

bool cuda_backend_available() { return cuda_backend_built(); }

namespace {

using Clock = std::chrono::steady_clock;

// The /train/phase_times series of the record (docs/run-record.md).
constexpr const char* kPhaseNames[] = {"router_time_s", "combine_time_s", "attention_time_s", "optimizer_time_s"};
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

std::vector<std::string> gather_strings(Communicator& world, const std::string& mine) {
  constexpr size_t kWidth = 128;
  std::vector<uint8_t> send(kWidth, 0), recv(kWidth * size_t(world.size()));
  std::copy_n(mine.begin(), std::min(mine.size(), kWidth - 1), send.begin());
  world.all_gather(send.data(), recv.data(), kWidth, DType::u8);
  std::vector<std::string> out;
  for (int r = 0; r < world.size(); ++r) out.emplace_back(reinterpret_cast<const char*>(recv.data() + r * kWidth));
  return out;
}

template <typename T>
class Trainer {
 public:
  Trainer(const CommandLine& cli, ProcessGrid& grid, std::string device_label)
      : cli_(cli), cfg_(cli.config), grid_(grid), world_(grid.world()), device_label_(std::move(device_label)),
        printer_(cfg_.total_steps(), cli.quiet || grid.rank() != 0) {}

  int run();

 private:
  void open_data();
  bool start_or_resume();
  void log_row(TrainRow& row);
  void print_banner(int threads) const;
  ModelInfo model_info() const;

  const CommandLine& cli_;
  const Config& cfg_;
  ProcessGrid& grid_;
  MpiCommunicator& world_;
  std::string device_label_;  // this rank's compute device
  mutable ProgressPrinter printer_;

  std::unique_ptr<TrainingEngine<T>> engine_;
  TrainProgress progress_;
  std::unique_ptr<TokenDataset> train_data_, val_data_;
  std::unique_ptr<BatchSampler> sampler_;
  std::unique_ptr<EvalBatches> eval_batches_;
  std::unique_ptr<RunRecordWriter> record_;  // rank 0 only
  double flops_per_token_counted_ = 0;
  std::vector<std::string> rank_hosts_, rank_devices_;  // per world rank
};

// "ranks 0-3 on node1 (cpu), ranks 4-7 on node2 (cpu)": consecutive ranks with the same host and
// device in one entry.
std::string placement_summary(const std::vector<std::string>& hosts, const std::vector<std::string>& devices) {
  std::ostringstream os;
  for (size_t first = 0; first < hosts.size();) {
    size_t last = first;
    while (last + 1 < hosts.size() && hosts[last + 1] == hosts[first] && devices[last + 1] == devices[first]) ++last;
    os << (first ? ", " : "") << (first == last ? "rank " + std::to_string(first)
                                                : "ranks " + std::to_string(first) + "-" + std::to_string(last))
       << " on " << hosts[first] << " (" << devices[first] << ")";
    first = last + 1;
  }
  return os.str();
}

template <typename T>
void Trainer<T>::open_data() {
  train_data_ = std::make_unique<TokenDataset>(cfg_.data.train, cfg_.model.vocab, "data.train");
  val_data_ = std::make_unique<TokenDataset>(cfg_.data.val, cfg_.model.vocab, "data.val");
  sampler_ = std::make_unique<BatchSampler>(*train_data_, cfg_.model.context, cfg_.train.seed, kTrainStream);
  eval_batches_ = std::make_unique<EvalBatches>(*val_data_, cfg_.model.context, cfg_.train.seed);
}

template <typename T>
ModelInfo Trainer<T>::model_info() const {
  const ModelCounts c = engine_->model().counts();
  ModelInfo m;
  m.N_total = c.n_total();
  m.N_active = c.n_active();
  m.N_embedding = c.n_embedding();
  m.N_router = c.n_router();
  m.d_model = cfg_.model.d_model;
  m.n_blocks = cfg_.model.n_blocks;
  m.n_heads = cfg_.model.n_heads;
  m.E = cfg_.moe.enabled ? cfg_.moe.expansion_rate : 1;
  m.G = cfg_.moe.enabled ? cfg_.moe.granularity : 1;
  m.n_experts = cfg_.n_experts();
  m.d_expert = cfg_.moe.enabled ? cfg_.d_expert() : cfg_.d_ff();
  m.top_k = cfg_.moe.enabled && cfg_.moe.routing == "token_choice" ? cfg_.moe.effective_top_k() : 0;
  m.routing = cfg_.moe.enabled ? cfg_.moe.routing : "dense";
  m.vocab = cfg_.model.vocab;
  m.context = cfg_.model.context;
  m.flops_per_token = c.flops_per_token();
  m.flops_per_token_counted = flops_per_token_counted_;
  return m;
}

// Opens or resumes the record; false when the run already completed (nothing left to do).
template <typename T>
bool Trainer<T>::start_or_resume() {
  const fs::path dir = cfg_.output.dir;
  const std::string record_path = (dir / "record.h5").string();
  const fs::path ckpt_dir = dir / "checkpoints";

  std::optional<TrainProgress> restored;
  const CheckpointSettings settings = config_resume_items(cfg_);
  // Before anything counts the checkpoints: a re-save killed between its renames leaves the only
  // copy of a step as step_<N>.replaced.tmp, which a fresh start must not remove.
  std::string cleaned;
  run_agreed(world_, [&] {
    if (world_.rank() == 0) cleaned = clean_interrupted_saves(cfg_.output.dir);
  });
  if (!cleaned.empty()) printer_.message(cleaned.substr(0, cleaned.size() - 1));
  if (cfg_.train.resume == "auto") {
    std::string report;
    run_agreed(world_, [&] {
      restored = load_latest_checkpoint(cfg_.output.dir, engine_->store(), engine_->optimizer(), grid_, &report,
                                        settings);
      // Manifests written before the settings were recorded still hold the seed.
      if (restored && restored->seed != cfg_.train.seed)
        throw InputError("error: cannot resume " + cfg_.output.dir + ": its checkpoint was trained with train.seed = " +
                         std::to_string(restored->seed) + ", not " + std::to_string(cfg_.train.seed));
      if (!restored && !list_checkpoint_steps(cfg_.output.dir).empty())
        throw InputError("error: cannot resume " + cfg_.output.dir + ": none of its checkpoints is usable:\n" + report +
                         "start over with output.overwrite = true (this removes them), or restore a checkpoint");
    });
    if (!report.empty()) printer_.message(report.substr(0, report.size() - 1));
    if (!restored) printer_.message("no checkpoint in " + (ckpt_dir).string() + " to resume from; starting at step 0");
  }

  RunInfo info;
  info.command_line = cfg_.command_line;
  info.config = config_items(cfg_);
  info.config_text = cfg_.config_text;
  info.world_size = world_.size();
  info.expert_parallel = grid_.ep_size();
  info.data_parallel = grid_.dp_size();
  info.backend = cfg_.train.device;
  info.moe_enabled = cfg_.moe.enabled;
  info.rank_hosts = rank_hosts_ = gather_strings(world_, grid_.host());
  info.rank_devices = rank_devices_ = gather_strings(world_, device_label_);
  info.phase_names.assign(std::begin(kPhaseNames), std::end(kPhaseNames));
  const ModelInfo minfo = model_info();

  int64_t finished = 0;  // the checkpoint is the end of a run whose record is completed
  run_agreed(world_, [&] {
    if (world_.rank() != 0) return;
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec)
      throw InputError("error: output.dir = " + dir.string() + " is invalid: cannot create it (" + ec.message() + ")");
    if (fs::exists(ckpt_dir) && !fs::is_directory(ckpt_dir))
      throw InputError("error: " + ckpt_dir.string() + " is not a directory; finemoe-train keeps its checkpoints there "
                       "(move the file away or choose another output.dir)");
    if (restored && restored->step >= cfg_.total_steps() && fs::exists(record_path) &&
        RunRecordReader::classify(record_path).state == RecordState::completed) {
      finished = 1;
      return;
    }
    if (restored) {
      if (fs::exists(record_path))
        record_ = std::make_unique<RunRecordWriter>(RunRecordWriter::resume(record_path, restored->step));
      else
        record_ = std::make_unique<RunRecordWriter>(RunRecordWriter::create(record_path, info, minfo, false));
      return;
    }
    if (!list_checkpoint_steps(dir.string()).empty()) {
      if (!cfg_.output.overwrite)
        throw InputError("error: " + ckpt_dir.string() +
                         " holds checkpoints of an earlier run; continue it with --resume (train.resume = auto) "
                         "or start over with output.overwrite = true");
    }
    record_ = std::make_unique<RunRecordWriter>(RunRecordWriter::create(record_path, info, minfo, cfg_.output.overwrite));
    // Checkpoints of an earlier run (asked to be overwritten) or leftovers of a save killed before
    // its first checkpoint went live.
    fs::remove_all(ckpt_dir);
  });
  world_.broadcast(&finished, 1, DType::i64, 0);
  if (finished) {
    progress_ = *restored;
    return false;
  }
  if (restored) {
    progress_ = *restored;
    progress_.restarts += 1;
    printer_.message("resumed from checkpoint at step " + std::to_string(progress_.step));
  } else {
    progress_ = TrainProgress{};
    progress_.seed = cfg_.train.seed;
  }
  return true;
}

// MoE metrics reduced over the world; rank 0 appends the row to the record.
template <typename T>
void Trainer<T>::log_row(TrainRow& row) {
  const StepMetrics m = engine_->metrics();
  row.dropped_fraction =
      m.assignments_requested > 0 ? double(m.assignments_dropped) / double(m.assignments_requested) : 0.0;
  row.alltoall_bytes = m.alltoall_bytes;
  row.alltoall_time_s = m.alltoall_time_s;
  row.expert_gemm_time_s = m.expert_gemm_time_s;
  row.phase_times = {{kPhaseNames[0], m.router_time_s},
                     {kPhaseNames[1], m.combine_time_s},
                     {kPhaseNames[2], m.attention_time_s},
                     {kPhaseNames[3], m.optimizer_time_s}};
  row.expert_load = m.expert_load;
  if (record_) record_->append_train(row);
}

template <typename T>
void Trainer<T>::print_banner(int threads) const {
  if (grid_.rank() != 0 || cli_.quiet) return;
  const ModelCounts c = engine_->model().counts();
  const int64_t total = cfg_.total_steps(), tokens_per_step = cfg_.tokens_per_step();
  std::ostringstream os;
  os << "finemoe-train: world " << world_.size() << " = EP " << grid_.ep_size() << " x DP " << grid_.dp_size()
     << ", backend " << cfg_.train.device << " " << cfg_.train.precision << ", " << threads << " threads/rank\n"
     << "placement: " << placement_summary(rank_hosts_, rank_devices_) << "\n"
     << "model: d_model " << cfg_.model.d_model << ", blocks " << cfg_.model.n_blocks << ", "
     << (cfg_.moe.enabled ? cfg_.moe.routing + " E=" + std::to_string(cfg_.moe.expansion_rate) +
                                " G=" + std::to_string(cfg_.moe.granularity) + " (" + std::to_string(cfg_.n_experts()) +
                                " experts of width " + std::to_string(cfg_.d_expert()) + ")"
                          : std::string("dense"))
     << ", N_total " << format_count(double(c.n_total())) << ", N_active " << format_count(double(c.n_active()))
     << "\ntraining " << total << " steps x " << tokens_per_step
     << " tokens = " << format_count(double(total * tokens_per_step)) << " tokens; record " << cfg_.output.dir
     << "/record.h5";
  printer_.message(os.str());
}

template <typename T>
int Trainer<T>::run() {
  const int threads = cfg_.train.threads > 0 ? cfg_.train.threads : grid_.default_threads();
  omp_set_num_threads(threads);
  cpu::set_blas_threads(threads);
  install_stop_signal_handlers();
  // Reports a phase of collectives that does not complete within parallel.watchdog_s.
  Watchdog watchdog(world_.handle(), cfg_.parallel.watchdog_s);

  // Sizes that cannot fit are refused before any tensor exists: the memory plan against the host
  // memory of the rank's share of the node, or on a GPU against the device's free memory shared by
  // the ranks that use it (cudaMemGetInfo).
  run_agreed(world_, [&] {
    std::string where;
    const double available = cfg_.train.device == "cpu" ? host_memory_per_rank(grid_.local_size(), &where)
                                                         : device_memory_per_rank(grid_.local_size(), &where);
    check_memory_fits(predict_memory(cfg_, world_.size()), available, where);
  });
  // Input problems (data, checkpoints, an existing record) surface here, agreed by all ranks.
  run_agreed(world_, [&] { open_data(); });
  engine_ = std::make_unique<TrainingEngine<T>>(cfg_, grid_);
  flops_per_token_counted_ = engine_->count_flops_per_token(*sampler_);
  if (!start_or_resume()) {
    printer_.message("finemoe-train: " + cfg_.output.dir + " holds a completed run (step " +
                     std::to_string(progress_.step) + "); nothing to do");
    return kExitOk;
  }
  print_banner(threads);

  const int64_t total = cfg_.total_steps();
  const int64_t tokens_per_step = cfg_.tokens_per_step();
  const CheckpointSettings settings = config_resume_items(cfg_);
  LrSchedule schedule(cfg_.train.lr, cfg_.train.final_lr, cfg_.train.warmup_fraction, total);
  const auto run_start = Clock::now();
  const double wall_before = progress_.wall_time_s;
  auto window_start = Clock::now();
  int64_t window_steps = 0;
  double last_eval = std::nan("");
  // train.stop_after: this invocation's share of the run (the schedule stays that of `total`).
  const int64_t stop_at = cfg_.train.stop_after > 0 ? progress_.step + cfg_.train.stop_after : total;
  if (progress_.step == total) {
    // Resumed from the final checkpoint of a run killed before it completed: the record kept the
    // final evaluation when it was logged before the checkpoint; otherwise evaluate again.
    const std::optional<EvalRow> logged = record_ ? record_->last_eval() : std::nullopt;
    double eval = logged && logged->step == total ? logged->loss : std::nan("");
    world_.broadcast(&eval, 1, DType::f64, 0);
    if (std::isnan(eval)) {
      last_eval = engine_->evaluate(*eval_batches_);
      if (record_) record_->append_eval(EvalRow{progress_.step, progress_.tokens, last_eval});
    } else {
      last_eval = eval;
    }
  }
  try {
    while (progress_.step < total) {
      const int64_t step = progress_.step;
      watchdog.stall_for_test(step + 1);
      const auto phase = [&](const char* what) { return watchdog.phase("step " + std::to_string(step + 1) + ": " + what); };
      TrainRow row;
      row.lr = schedule.at(step);
      StepResult r;
      {
        const auto p = phase("forward, backward and gradient reduction");
        // Logged steps run uncaptured with their stopwatches (train.cuda_graph): the phase times.
        if ((step + 1) % cfg_.output.log_interval == 0 || step + 1 == total) engine_->time_next_step();
        r = engine_->step(step, row.lr, *sampler_);
      }
      row.loss = r.loss;
      row.aux_loss = r.aux_loss;
      row.grad_norm = r.grad_norm;
      progress_.step = step + 1;
      progress_.tokens += tokens_per_step;
      progress_.wall_time_s = wall_before + seconds_since(run_start);
      ++window_steps;

      const bool last = progress_.step == total;
      if (progress_.step % cfg_.output.log_interval == 0 || last) {
        const double window_s = seconds_since(window_start);
        row.step = progress_.step;
        row.tokens = progress_.tokens;
        row.step_time_s = window_s / double(window_steps);
        row.tokens_per_s = double(window_steps * tokens_per_step) / window_s;
        {
          const auto p = phase("metrics reduction");
          log_row(row);
        }
        printer_.step(progress_.step, row.loss, row.lr, row.grad_norm, row.tokens_per_s, row.step_time_s);
        window_start = Clock::now();
        window_steps = 0;
      }
      if ((cfg_.train.eval_interval > 0 && progress_.step % cfg_.train.eval_interval == 0) || last) {
        {
          const auto p = phase("evaluation");
          last_eval = engine_->evaluate(*eval_batches_);
        }
        if (record_) record_->append_eval(EvalRow{progress_.step, progress_.tokens, last_eval});
        printer_.eval(progress_.step, last_eval);
      }
      bool signalled = false;
      {
        const auto p = phase("stop-signal agreement");
        signalled = stop_requested_anywhere(world_);
      }
      const bool stop = signalled || progress_.step == stop_at;
      if (last || stop || (cfg_.output.checkpoint_interval > 0 && progress_.step % cfg_.output.checkpoint_interval == 0)) {
        const auto p = phase("checkpoint");
        save_checkpoint(cfg_.output.dir, engine_->store(), engine_->optimizer(), progress_, grid_,
                        cfg_.output.keep_checkpoints, settings);
      }
      if (stop && !last) {
        const std::string why = signalled ? "signal received" : "train.stop_after = " + std::to_string(cfg_.train.stop_after) + " steps done";
        if (record_) record_->stop(RunStatus::interrupted, why + "; checkpoint at step " + std::to_string(progress_.step));
        printer_.message("stopped (" + why + ") at step " + std::to_string(progress_.step) + "; checkpoint written");
        return kExitInterrupted;
      }
    }
  } catch (const std::exception& e) {
    if (record_) record_->stop(RunStatus::failed, e.what());
    throw;
  }
  if (record_) {
    RunResult result;
    result.eval_loss = last_eval;
    result.tokens = progress_.tokens;
    result.flops = engine_->model().counts().flops_per_token() * double(progress_.tokens);
    result.wall_time_s = progress_.wall_time_s;
    const FinalInfo fin = record_->complete(result);
    printer_.message("done: eval loss " + std::to_string(fin.eval_loss) + ", smoothed train loss " +
                     std::to_string(fin.smoothed_train_loss) + ", " + format_duration(fin.wall_time_s));
  }
  return kExitOk;
}

}  // namespace

int run_training(const CommandLine& cli, ProcessGrid& grid) {
  std::string device = setup_compute(cli.config, grid);
  if (cli.config.train.precision == "fp64") return Trainer<double>(cli, grid, std::move(device)).run();
  return Trainer<float>(cli, grid, std::move(device)).run();
}

}  // namespace finemoe
