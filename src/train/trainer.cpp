#include "train/trainer.h"

#include <omp.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <sstream>

#include "backend/cpu/adamw.h"
#include "backend/cpu/blas.h"
#include "checkpoint/checkpoint.h"
#include "data/batch_sampler.h"
#include "data/token_dataset.h"
#include "io/run_record.h"
#include "model/model.h"
#include "model/moe/moe_layer.h"
#include "model/moe/routing_group.h"
#include "parallel/agreement.h"
#include "train/exit_codes.h"
#include "train/gradient_sync.h"
#include "train/lr_schedule.h"
#include "train/progress.h"
#include "train/stop_signal.h"
#include "train/train_state.h"
#include "util/check.h"

namespace fs = std::filesystem;

namespace finemoe {

bool cuda_backend_available() { return false; }  // the CUDA trainer path is not wired in yet

namespace {

using Clock = std::chrono::steady_clock;
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
  Trainer(const CommandLine& cli, ProcessGrid& grid)
      : cli_(cli), cfg_(cli.config), grid_(grid), world_(grid.world()),
        printer_(cfg_.total_steps(), cli.quiet || grid.rank() != 0) {}

  int run();

 private:
  void build_model();
  void open_data();
  void count_flops();
  void start_or_resume();
  double train_step(int64_t step, double lr, TrainRow& row);
  double evaluate();
  void checkpoint();
  void log_row(TrainRow& row);
  ModelInfo model_info() const;

  const CommandLine& cli_;
  const Config& cfg_;
  ProcessGrid& grid_;
  MpiCommunicator& world_;
  ProgressPrinter printer_;

  ParameterStore<T> store_;
  std::unique_ptr<Model<T>> model_;
  std::unique_ptr<MpiCommunicator> routing_group_;
  OptimizerState<T> optimizer_;
  TrainProgress progress_;
  std::unique_ptr<GradientSync<T>> sync_;

  std::unique_ptr<TokenDataset> train_data_, val_data_;
  std::unique_ptr<BatchSampler> sampler_;
  std::unique_ptr<EvalBatches> eval_batches_;
  std::vector<int32_t> inputs_, targets_;

  std::unique_ptr<RunRecordWriter> record_;
  double flops_per_token_counted_ = 0;
};

template <typename T>
void Trainer<T>::build_model() {
  MoeComms comms;
  if (cfg_.moe.enabled) {
    routing_group_ = moe::make_routing_group(world_, cfg_.moe.group_size, cfg_.train.micro_batch_size() / world_.size());
    comms.expert_group = &grid_.expert_group();
    comms.routing_group = routing_group_.get();
  }
  const int ep_rank = grid_.ep_rank(), ep_size = grid_.ep_size();
  const Config& cfg = cfg_;
  model_ = std::make_unique<Model<T>>(cfg_, store_, [&, comms](int block, ParameterStore<T>& store) {
    return cfg.moe.enabled ? make_moe_layer<T>(cfg, block, store, comms, ep_rank, ep_size)
                           : make_dense_ffn<T>(cfg, block, store);
  });
  store_.allocate(cfg_.train.seed);
  optimizer_.resize_like(store_);
  sync_ = std::make_unique<GradientSync<T>>(store_, grid_, cfg_.model.n_blocks);
}

template <typename T>
void Trainer<T>::open_data() {
  train_data_ = std::make_unique<TokenDataset>(cfg_.data.train, cfg_.model.vocab, "data.train");
  val_data_ = std::make_unique<TokenDataset>(cfg_.data.val, cfg_.model.vocab, "data.val");
  sampler_ = std::make_unique<BatchSampler>(*train_data_, cfg_.model.context, cfg_.train.seed, kTrainStream);
  eval_batches_ = std::make_unique<EvalBatches>(*val_data_, cfg_.model.context, cfg_.train.seed);
  const size_t local = size_t(cfg_.train.micro_batch_size() / world_.size()) * size_t(cfg_.model.context);
  inputs_.resize(local);
  targets_.resize(local);
}

// GEMM FLOPs per token of one forward + backward, counted on the first micro-batch (the gradients
// are discarded), so the record can hold them beside the paper's formula from the start.
template <typename T>
void Trainer<T>::count_flops() {
  const int local = cfg_.train.micro_batch_size() / world_.size();
  TokenBatch batch;
  batch.n_seq = local;
  batch.context = cfg_.model.context;
  batch.first_global_seq = int64_t(world_.rank()) * local;
  batch.loss_scale = 1.0 / (double(cfg_.train.batch_size) * cfg_.model.context);
  batch.micro_batches = cfg_.train.accumulation_steps();
  sampler_->fill(0, uint64_t(batch.first_global_seq), local, inputs_.data(), targets_.data());
  const int64_t before = cpu::gemm_flops().total();
  model_->forward_backward(inputs_.data(), targets_.data(), batch);
  flops_per_token_counted_ = double(cpu::gemm_flops().total() - before) / double(batch.tokens());
  store_.zero_grads();
}

template <typename T>
ModelInfo Trainer<T>::model_info() const {
  const ModelCounts c = model_->counts();
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
  m.d_expert = cfg_.moe.enabled ? cfg_.d_expert() : 4 * cfg_.model.d_model;
  m.top_k = cfg_.moe.enabled && cfg_.moe.routing == "token_choice" ? cfg_.moe.effective_top_k() : 0;
  m.routing = cfg_.moe.enabled ? cfg_.moe.routing : "dense";
  m.vocab = cfg_.model.vocab;
  m.context = cfg_.model.context;
  m.flops_per_token = c.flops_per_token();
  m.flops_per_token_counted = flops_per_token_counted_;
  return m;
}

template <typename T>
void Trainer<T>::start_or_resume() {
  const fs::path dir = cfg_.output.dir;
  const std::string record_path = (dir / "record.h5").string();
  const fs::path ckpt_dir = dir / "checkpoints";

  std::optional<TrainProgress> restored;
  if (cfg_.train.resume == "auto") {
    std::string report;
    run_agreed(world_, [&] { restored = load_latest_checkpoint(cfg_.output.dir, store_, optimizer_, grid_, &report); });
    if (!report.empty()) printer_.message(report);
    if (restored && restored->seed != cfg_.train.seed)
      throw InputError("error: cannot resume " + cfg_.output.dir + ": its checkpoint was trained with train.seed = " +
                       std::to_string(restored->seed) + ", not " + std::to_string(cfg_.train.seed));
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
  info.rank_hosts = gather_strings(world_, grid_.host());
  info.rank_devices = gather_strings(world_, "cpu");
  const ModelInfo minfo = model_info();

  run_agreed(world_, [&] {
    if (world_.rank() != 0) return;
    fs::create_directories(dir);
    if (restored) {
      if (fs::exists(record_path))
        record_ = std::make_unique<RunRecordWriter>(RunRecordWriter::resume(record_path, restored->step));
      else
        record_ = std::make_unique<RunRecordWriter>(RunRecordWriter::create(record_path, info, minfo, false));
      return;
    }
    if (fs::exists(ckpt_dir) && !fs::is_empty(ckpt_dir)) {
      if (!cfg_.output.overwrite)
        throw InputError("error: " + ckpt_dir.string() +
                         " holds checkpoints of an earlier run; continue it with --resume (train.resume = auto) "
                         "or start over with output.overwrite = true");
      fs::remove_all(ckpt_dir);
    }
    record_ = std::make_unique<RunRecordWriter>(RunRecordWriter::create(record_path, info, minfo, cfg_.output.overwrite));
  });
  if (restored) {
    progress_ = *restored;
    progress_.restarts += 1;
    printer_.message("resumed from checkpoint at step " + std::to_string(progress_.step));
  } else {
    progress_ = TrainProgress{};
    progress_.seed = cfg_.train.seed;
  }
}

template <typename T>
double Trainer<T>::train_step(int64_t step, double lr, TrainRow& row) {
  const int micro_batches = cfg_.train.accumulation_steps();
  const int micro = cfg_.train.micro_batch_size();
  const int local = micro / world_.size();
  const int context = cfg_.model.context;
  TokenBatch batch;
  batch.n_seq = local;
  batch.context = context;
  batch.loss_scale = 1.0 / (double(cfg_.train.batch_size) * context);
  batch.micro_batches = micro_batches;

  store_.zero_grads();
  for (auto* ffn : model_->ffn_layers()) ffn->reset_stats();
  double loss_sum = 0, aux = 0;
  for (int m = 0; m < micro_batches; ++m) {
    batch.first_global_seq = int64_t(m) * micro + int64_t(world_.rank()) * local;
    sampler_->fill(uint64_t(step), uint64_t(batch.first_global_seq), local, inputs_.data(), targets_.data());
    const bool last = m + 1 == micro_batches;
    std::function<void(int)> done;
    if (last) done = [this](int block) { sync_->start_block(block); };
    loss_sum += model_->forward_backward(inputs_.data(), targets_.data(), batch, done);
    aux += model_->aux_loss();
  }
  sync_->finish();

  double sums[2] = {loss_sum, aux};
  world_.all_reduce_sum(sums, 2);
  const double loss = sums[0] * batch.loss_scale;
  if (!std::isfinite(loss))
    throw RuntimeFailure("training loss is " + std::to_string(loss) + " at step " + std::to_string(step + 1) +
                         " (lower train.lr or check the data)");

  const double norm = sync_->global_norm();
  cpu::AdamWStep s;
  s.lr = lr;
  s.beta1 = cfg_.train.beta1;
  s.beta2 = cfg_.train.beta2;
  s.eps = cfg_.train.eps;
  s.t = step + 1;
  s.grad_scale = cfg_.train.grad_clip > 0 && norm > cfg_.train.grad_clip ? cfg_.train.grad_clip / norm : 1.0;
  for (int i = 0; i < store_.count(); ++i) {
    const ParamSpec& spec = store_.spec(i);
    const auto g = spec.group;
    const int64_t off = store_.offset(i), n = spec.numel();
    s.weight_decay = spec.weight_decay ? cfg_.train.weight_decay : 0.0;
    cpu::adamw_update(store_.values(g).data() + off, store_.grads(g).data() + off,
                      optimizer_.first(g).data() + off, optimizer_.second(g).data() + off, n, s);
  }

  row.loss = loss;
  row.aux_loss = sums[1];
  row.lr = lr;
  row.grad_norm = norm;
  return loss;
}

template <typename T>
double Trainer<T>::evaluate() {
  const int micro = cfg_.train.micro_batch_size();
  const int local = micro / world_.size();
  TokenBatch batch;
  batch.n_seq = local;
  batch.context = cfg_.model.context;
  double loss_sum = 0;
  for (int first = 0; first < cfg_.train.eval_sequences; first += micro) {
    batch.first_global_seq = first + int64_t(world_.rank()) * local;
    eval_batches_->fill(uint64_t(batch.first_global_seq), local, inputs_.data(), targets_.data());
    loss_sum += model_->forward_loss(inputs_.data(), targets_.data(), batch);
  }
  return world_.sum(loss_sum) / (double(cfg_.train.eval_sequences) * cfg_.model.context);
}

template <typename T>
void Trainer<T>::checkpoint() {
  save_checkpoint(cfg_.output.dir, store_, optimizer_, progress_, grid_, cfg_.output.keep_checkpoints);
}

// Per-layer expert loads and MoE metrics reduced over the world (rank 0 writes them).
template <typename T>
void Trainer<T>::log_row(TrainRow& row) {
  const auto layers = model_->ffn_layers();
  const int n_experts = cfg_.n_experts();
  std::vector<int64_t> counters;  // [requested, dropped, bytes, expert_load...]
  std::vector<double> times(2, 0.0);
  counters.assign(3 + size_t(n_experts) * layers.size(), 0);
  for (size_t b = 0; b < layers.size(); ++b) {
    const FeedForwardStats& st = layers[b]->stats();
    counters[0] += st.assignments_requested;
    counters[1] += st.assignments_dropped;
    counters[2] += st.alltoall_bytes;
    for (int e = 0; e < n_experts && size_t(e) < st.expert_tokens.size(); ++e)
      counters[3 + b * size_t(n_experts) + size_t(e)] = st.expert_tokens[size_t(e)];
    times[0] += st.alltoall_time_s;
    times[1] += st.expert_gemm_time_s;
  }
  world_.all_reduce_sum(counters.data(), counters.size());
  world_.all_reduce_max(times.data(), times.size(), DType::f64);
  row.dropped_fraction = counters[0] > 0 ? double(counters[1]) / double(counters[0]) : 0.0;
  row.alltoall_bytes = counters[2];
  row.alltoall_time_s = times[0];
  row.expert_gemm_time_s = times[1];
  if (n_experts > 0) row.expert_load.assign(counters.begin() + 3, counters.end());
  if (record_) record_->append_train(row);
}

template <typename T>
int Trainer<T>::run() {
  const int threads = cfg_.train.threads > 0 ? cfg_.train.threads : grid_.default_threads();
  omp_set_num_threads(threads);
  cpu::set_blas_threads(threads);
  install_stop_signal_handlers();

  // Input problems (data, checkpoints, an existing record) surface here, agreed by all ranks.
  run_agreed(world_, [&] { open_data(); });
  build_model();
  count_flops();
  start_or_resume();

  const int64_t total = cfg_.total_steps();
  const int64_t tokens_per_step = cfg_.tokens_per_step();
  LrSchedule schedule(cfg_.train.lr, cfg_.train.final_lr, cfg_.train.warmup_fraction, total);
  if (grid_.rank() == 0 && !cli_.quiet) {
    const ModelCounts c = model_->counts();
    std::ostringstream os;
    os << "finemoe-train: world " << world_.size() << " = EP " << grid_.ep_size() << " x DP " << grid_.dp_size()
       << ", backend cpu " << cfg_.train.precision << ", " << threads << " threads/rank\n"
       << "model: d_model " << cfg_.model.d_model << ", blocks " << cfg_.model.n_blocks << ", "
       << (cfg_.moe.enabled ? cfg_.moe.routing + " E=" + std::to_string(cfg_.moe.expansion_rate) +
                                  " G=" + std::to_string(cfg_.moe.granularity) + " (" +
                                  std::to_string(cfg_.n_experts()) + " experts of width " +
                                  std::to_string(cfg_.d_expert()) + ")"
                            : std::string("dense"))
       << ", N_total " << format_count(double(c.n_total())) << ", N_active " << format_count(double(c.n_active()))
       << "\ntraining " << total << " steps x " << tokens_per_step << " tokens = " << format_count(double(total * tokens_per_step))
       << " tokens; record " << cfg_.output.dir << "/record.h5";
    printer_.message(os.str());
  }

  const auto run_start = Clock::now();
  const double wall_before = progress_.wall_time_s;
  auto window_start = Clock::now();
  int64_t window_steps = 0;
  double last_eval = std::nan("");
  try {
    while (progress_.step < total) {
      const int64_t step = progress_.step;
      TrainRow row;
      train_step(step, schedule.at(step), row);
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
        log_row(row);
        printer_.step(progress_.step, row.loss, row.lr, row.grad_norm, row.tokens_per_s, row.step_time_s);
        window_start = Clock::now();
        window_steps = 0;
      }
      if ((cfg_.train.eval_interval > 0 && progress_.step % cfg_.train.eval_interval == 0) || last) {
        last_eval = evaluate();
        if (record_) record_->append_eval(EvalRow{progress_.step, progress_.tokens, last_eval});
        printer_.eval(progress_.step, last_eval);
      }
      const bool stop = stop_requested_anywhere(world_);
      if (last || stop || (cfg_.output.checkpoint_interval > 0 && progress_.step % cfg_.output.checkpoint_interval == 0))
        checkpoint();
      if (stop && !last) {
        if (record_) record_->stop(RunStatus::interrupted, "signal received; checkpoint at step " + std::to_string(progress_.step));
        printer_.message("stopped by signal at step " + std::to_string(progress_.step) + "; checkpoint written");
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
    result.flops = model_->counts().flops_per_token() * double(progress_.tokens);
    result.wall_time_s = progress_.wall_time_s;
    const FinalInfo fin = record_->complete(result);
    printer_.message("done: eval loss " + std::to_string(fin.eval_loss) + ", smoothed train loss " +
                     std::to_string(fin.smoothed_train_loss) + ", " + format_duration(fin.wall_time_s));
  }
  return kExitOk;
}

}  // namespace

int run_training(const CommandLine& cli, ProcessGrid& grid) {
  if (cli.config.train.precision == "fp64") return Trainer<double>(cli, grid).run();
  return Trainer<float>(cli, grid).run();
}

}  // namespace finemoe
