#include "train/engine.h"

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "backend/ops.h"
#include "backend/cpu/blas.h"
#include "model/moe/moe_layer.h"
#include "model/moe/routing_group.h"
#include "train/host_staged_communicator.h"
#include "util/check.h"

namespace finemoe {

template <typename T>
typename Model<T>::FfnFactory ffn_factory(const Config& cfg, const MoeComms& comms, int ep_rank, int ep_size) {
  auto scratch = std::make_shared<MoeScratch<T>>();  // one for all blocks
  auto dense_scratch = std::make_shared<DenseFfnScratch<T>>();
  return [&cfg, comms, ep_rank, ep_size, scratch, dense_scratch](int block, ParameterStore<T>& store) {
    return cfg.moe.enabled ? make_moe_layer<T>(cfg, block, store, comms, ep_rank, ep_size, scratch)
                           : make_dense_ffn<T>(cfg, block, store, dense_scratch);
  };
}

std::string cuda_graph_status(const Config& cfg, int world_size) {
  if (!cfg.train.cuda_graph) return "off";
  if (cfg.train.device != "cuda") return "off: needs train.device = cuda";
  if (world_size != 1) return "off: needs one rank (the gradient norm is reduced across ranks on the host)";
  if (cfg.train.accumulation_steps() != 1) return "off: needs one micro-batch per step";
  if (cfg.moe.enabled && cfg.moe.routing != "expert_choice")
    return "off: token choice reads its per-expert counts on the host";
  return "captured once and replayed (phase times from the uncaptured logged steps)";
}

template <typename T>
TrainingEngine<T>::TrainingEngine(const Config& cfg, ProcessGrid& grid,
                                  const std::function<void(StepCommunicators&)>& wrap)
    : cfg_(cfg), grid_(grid), comms_(make_step_communicators(cfg, grid)) {
  if (wrap) wrap(comms_);
  MoeComms comms;
  if (cfg.moe.enabled) {
    routing_group_ = moe::make_routing_group(grid.world(), cfg.moe.group_size,
                                             cfg.train.micro_batch_size() / grid.world_size());
    comms.expert_group = comms_.expert_group;
    comms.expert_group_takes_compute_memory = !on_device() || cfg.parallel.communicator == "nccl";
    comms.routing_group = routing_group_.get();
    if (on_device()) {  // MPI cannot read device memory: the probabilities travel through the host
      staged_routing_group_ = std::make_unique<HostStagedCommunicator>(*routing_group_);
      comms.routing_group = staged_routing_group_.get();
    }
  }
  model_ = std::make_unique<Model<T>>(cfg, store_, ffn_factory<T>(cfg, comms, grid.ep_rank(), grid.ep_size()));
  store_.allocate(cfg.train.seed);
  optimizer_.resize_like(store_);
  sync_ = std::make_unique<GradientSync<T>>(store_, comms_, cfg.model.n_blocks);
  const size_t local_tokens = size_t(cfg.train.micro_batch_size() / grid.world_size()) * size_t(cfg.model.context);
  host_inputs_.resize(local_tokens);
  host_targets_.resize(local_tokens);
  inputs_.resize(local_tokens);
  targets_.resize(local_tokens);
  if (std::is_same_v<T, float> && on_device() && cuda_graph_status(cfg, grid.world_size()).rfind("captured", 0) == 0)
    use_graph_step_eagerly(), replay_ = true;
}

template <typename T>
void TrainingEngine<T>::use_graph_step_eagerly() {
  FINEMOE_CHECK((std::is_same_v<T, float>), "the graph step is fp32 storage only");
  FINEMOE_CHECK(grid_.world_size() == 1 && cfg_.train.accumulation_steps() == 1,
                "the graph step needs one rank and one micro-batch");
  graph_mode_ = true;
  replay_ = false;
  step_inputs_.resize(2);
  adamw_constants_.resize(ops::kAdamWConstants);
}

template <typename T>
template <typename Fill>
void TrainingEngine<T>::load_tokens(Fill&& fill) {
  fill(host_inputs_.data(), host_targets_.data());
  const int vocab = cfg_.model.vocab;
  for (size_t i = 0; i < host_targets_.size(); ++i)
    FINEMOE_CHECK(host_targets_[i] >= 0 && host_targets_[i] < vocab && host_inputs_[i] >= 0 && host_inputs_[i] < vocab,
                  "token " << host_inputs_[i] << " -> " << host_targets_[i] << " at " << i
                           << " outside the vocabulary [0, " << vocab << ")");
  copy_to_device(inputs_.data(), host_inputs_.data(), host_inputs_.size());
  copy_to_device(targets_.data(), host_targets_.data(), host_targets_.size());
}

// Micro-batch m of a step: global sequences [m * micro, (m + 1) * micro), this rank's contiguous
// slice of them.
template <typename T>
TokenBatch TrainingEngine<T>::micro_batch(int m) const {
  const int micro = cfg_.train.micro_batch_size();
  TokenBatch batch;
  batch.n_seq = micro / grid_.world_size();
  batch.context = cfg_.model.context;
  batch.first_global_seq = int64_t(m) * micro + int64_t(grid_.rank()) * batch.n_seq;
  batch.loss_scale = 1.0 / (double(cfg_.train.batch_size) * cfg_.model.context);
  batch.micro_batches = cfg_.train.accumulation_steps();
  return batch;
}

template <typename T>
StepResult TrainingEngine<T>::compute_gradients(int64_t step, const BatchSampler& data) {
  const int micro_batches = cfg_.train.accumulation_steps();
  store_.zero_grads();
  for (auto* ffn : model_->ffn_layers()) ffn->reset_stats();
  model_->reset_attention_time();
  model_->zero_loss_sums();
  for (int m = 0; m < micro_batches; ++m) {
    const TokenBatch batch = micro_batch(m);
    load_tokens([&](int32_t* in, int32_t* tg) {
      data.fill(uint64_t(step), uint64_t(batch.first_global_seq), batch.n_seq, in, tg);
    });
    std::function<void(int)> start_reduction;
    if (m + 1 == micro_batches) start_reduction = [this](int block) { sync_->start_block(block); };
    model_->accumulate_forward_backward(inputs_.data(), targets_.data(), batch, start_reduction);
  }
  sync_->finish();
  double sums[2];  // cross-entropy sum, scaled aux loss: the step's one wait for its losses
  copy_to_host(sums, model_->loss_sums(), 2);
  grid_.world().all_reduce_sum(sums, 2);
  StepResult r;
  r.loss = sums[0] / (double(cfg_.train.batch_size) * cfg_.model.context);
  r.aux_loss = sums[1];
  if (!std::isfinite(r.loss))
    throw RuntimeFailure("training loss is " + std::to_string(r.loss) + " at step " + std::to_string(step + 1) +
                         " (lower train.lr or check the data)");
  return r;
}

template <typename T>
void TrainingEngine<T>::apply_update(int64_t step, double lr, double grad_norm) {
  cpu::AdamWStep s;
  s.lr = lr;
  s.beta1 = cfg_.train.beta1;
  s.beta2 = cfg_.train.beta2;
  s.eps = cfg_.train.eps;
  s.t = step + 1;
  const double clip = cfg_.train.grad_clip;
  s.grad_scale = clip > 0 && grad_norm > clip ? clip / grad_norm : 1.0;
  for (int i = 0; i < store_.count(); ++i) {
    const ParamSpec& spec = store_.spec(i);
    const ParamGroup g = spec.group;
    const int64_t off = store_.offset(i);
    s.weight_decay = spec.weight_decay ? cfg_.train.weight_decay : 0.0;
    ops::adamw_update(store_.values(g).data() + off, store_.grads(g).data() + off,
                      optimizer_.first(g).data() + off, optimizer_.second(g).data() + off, spec.numel(), s);
  }
}

namespace {
std::vector<std::pair<const void*, size_t>> sorted_live_buffers() {
  auto b = live_buffers();
  std::sort(b.begin(), b.end());
  return b;
}
}  // namespace

// The captured work: forward, backward, the norm's sums of squares, clipping and AdamW, every
// scalar read from device memory (inputs_ / targets_, step_inputs_), one rank so nothing to reduce.
template <typename T>
void TrainingEngine<T>::graph_body(const TokenBatch& batch) {
  if constexpr (std::is_same_v<T, float>) {
    store_.zero_grads();
    model_->zero_loss_sums();
    model_->accumulate_forward_backward(inputs_.data(), targets_.data(), batch);
    optimizer_watch_.start();
    sync_->compute_squares();
    cpu::AdamWStep fixed;
    fixed.beta1 = cfg_.train.beta1;
    fixed.beta2 = cfg_.train.beta2;
    fixed.eps = cfg_.train.eps;
    fixed.weight_decay = cfg_.train.weight_decay;
    ops::adamw_prepare(step_inputs_.data(), sync_->squares(), fixed, cfg_.train.grad_clip, adamw_constants_.data());
    for (int i = 0; i < store_.count(); ++i) {
      const ParamSpec& spec = store_.spec(i);
      const ParamGroup g = spec.group;
      const int64_t off = store_.offset(i);
      ops::adamw_update_prepared(store_.values(g).data() + off, store_.grads(g).data() + off,
                                 optimizer_.first(g).data() + off, optimizer_.second(g).data() + off, spec.numel(),
                                 adamw_constants_.data(), spec.weight_decay);
    }
    optimizer_watch_.stop();
  } else {
    (void)batch;
  }
}

template <typename T>
StepResult TrainingEngine<T>::graph_step(int64_t step, double lr, const BatchSampler& data) {
  const TokenBatch batch = micro_batch(0);
  // Inputs of the step into the fixed device buffers the graph reads, ordered before its work
  // (pageable sources: staged before the calls return).
  load_tokens([&](int32_t* in, int32_t* tg) {
    data.fill(uint64_t(step), uint64_t(batch.first_global_seq), batch.n_seq, in, tg);
  });
  const double inputs[2] = {lr, double(step + 1)};
  copy_to_device(step_inputs_.data(), inputs, 2);

  const bool eager = !replay_ || timed_next_ || !warmed_;
  timed_next_ = false;
  // A replay needs every buffer where the capture saw it (an evaluation or a larger batch could
  // have moved one): otherwise capture again.
  if (!eager && graph_.captured() && sorted_live_buffers() != graph_buffers_) graph_.reset();
  if (eager || !graph_.captured()) {
    for (auto* ffn : model_->ffn_layers()) ffn->reset_stats();  // static counts: replays keep them
    model_->reset_attention_time();
    optimizer_watch_.reset();
  }
  if (eager) {
    graph_body(batch);
    warmed_ = true;
  } else {
    if (!graph_.captured()) {
      graph_.begin_capture();
      try {
        graph_body(batch);
      } catch (...) {
        // End the capture so the stream leaves capture mode and the first error is the one reported.
        try {
          graph_.end_capture();
        } catch (...) {
        }
        graph_.reset();
        throw;
      }
      graph_.end_capture();
      graph_buffers_ = sorted_live_buffers();
    }
    graph_.replay();
  }
  double sums[2];  // the step's two waits: its losses, then its gradient norm (for the record)
  copy_to_host(sums, model_->loss_sums(), 2);
  grid_.world().all_reduce_sum(sums, 2);
  double squares[2];
  copy_to_host(squares, sync_->squares(), 2);
  StepResult r;
  r.loss = sums[0] / (double(cfg_.train.batch_size) * cfg_.model.context);
  r.aux_loss = sums[1];
  r.grad_norm = std::sqrt(squares[0] + squares[1]);
  if (!std::isfinite(r.loss))
    throw RuntimeFailure("training loss is " + std::to_string(r.loss) + " at step " + std::to_string(step + 1) +
                         " (lower train.lr or check the data)");
  return r;
}

template <typename T>
void TrainingEngine<T>::update_routing_biases() {
  if (!cfg_.moe.enabled || !cfg_.moe.bias_balance()) return;
  std::vector<MoeLayer<T>*> layers;
  for (auto* ffn : model_->ffn_layers())
    if (auto* moe = dynamic_cast<MoeLayer<T>*>(ffn); moe && moe->has_routing_bias()) layers.push_back(moe);
  const size_t E = size_t(cfg_.n_experts());
  // The step's routed tokens per (layer, expert), this rank's (on the host since the forward's count read).
  std::vector<int64_t> load(layers.size() * E);
  for (size_t b = 0; b < layers.size(); ++b) std::copy_n(layers[b]->routed_tokens().begin(), E, load.begin() + b * E);
  grid_.world().all_reduce_sum(load.data(), load.size());
  for (size_t b = 0; b < layers.size(); ++b) layers[b]->update_routing_bias(load.data() + b * E);
}

template <typename T>
StepResult TrainingEngine<T>::step(int64_t step, double lr, const BatchSampler& data) {
  if (graph_mode_) return graph_step(step, lr, data);
  StepResult r = compute_gradients(step, data);
  optimizer_watch_.reset();  // this step's only
  optimizer_watch_.start();
  r.grad_norm = sync_->global_norm();
  apply_update(step, lr, r.grad_norm);
  update_routing_biases();
  optimizer_watch_.stop();
  // No wait here: records and checkpoints read the parameters through copy_to_host, which waits.
  return r;
}

template <typename T>
double TrainingEngine<T>::evaluate(const EvalBatches& eval) {
  const int micro = cfg_.train.micro_batch_size();
  model_->zero_loss_sums();
  for (int first = 0; first < cfg_.train.eval_sequences; first += micro) {
    TokenBatch batch = micro_batch(0);
    batch.first_global_seq += first;
    load_tokens([&](int32_t* in, int32_t* tg) { eval.fill(uint64_t(batch.first_global_seq), batch.n_seq, in, tg); });
    model_->accumulate_loss(inputs_.data(), targets_.data(), batch);
  }
  double sums[2];
  copy_to_host(sums, model_->loss_sums(), 2);
  return grid_.world().sum(sums[0]) / (double(cfg_.train.eval_sequences) * cfg_.model.context);
}

template <typename T>
double TrainingEngine<T>::count_flops_per_token(const BatchSampler& data) {
  const TokenBatch batch = micro_batch(0);
  load_tokens([&](int32_t* in, int32_t* tg) { data.fill(0, uint64_t(batch.first_global_seq), batch.n_seq, in, tg); });
  const int64_t before = cpu::gemm_flops().total();
  model_->forward_backward(inputs_.data(), targets_.data(), batch);
  const double per_token = double(cpu::gemm_flops().total() - before) / double(batch.tokens());
  store_.zero_grads();
  for (auto* ffn : model_->ffn_layers()) ffn->reset_stats();
  return per_token;
}

template <typename T>
StepMetrics TrainingEngine<T>::metrics() {
  const auto layers = model_->ffn_layers();
  const size_t n_experts = size_t(cfg_.n_experts());
  std::vector<int64_t> counters(3 + n_experts * layers.size(), 0);  // requested, dropped, bytes, loads
  double times[6] = {0, 0, 0, 0, model_->take_attention_seconds(), optimizer_watch_.take_seconds()};
  for (size_t b = 0; b < layers.size(); ++b) {
    const FeedForwardStats& st = layers[b]->stats();
    counters[0] += st.assignments_requested;
    counters[1] += st.assignments_dropped;
    counters[2] += st.alltoall_bytes;
    for (size_t e = 0; e < std::min(n_experts, st.expert_tokens.size()); ++e)
      counters[3 + b * n_experts + e] = st.expert_tokens[e];
    times[0] += st.alltoall_time_s;
    times[1] += st.expert_gemm_time_s;
    times[2] += st.router_time_s;
    times[3] += st.combine_time_s;
  }
  grid_.world().all_reduce_sum(counters.data(), counters.size());
  grid_.world().all_reduce_max(times, 6, DType::f64);
  StepMetrics m;
  m.assignments_requested = counters[0];
  m.assignments_dropped = counters[1];
  m.alltoall_bytes = counters[2];
  m.alltoall_time_s = times[0];
  m.expert_gemm_time_s = times[1];
  m.router_time_s = times[2];
  m.combine_time_s = times[3];
  m.attention_time_s = times[4];
  m.optimizer_time_s = times[5];
  m.expert_load.assign(counters.begin() + 3, counters.end());
  return m;
}

template class TrainingEngine<float>;
template class TrainingEngine<double>;
template Model<float>::FfnFactory ffn_factory<float>(const Config&, const MoeComms&, int, int);
template Model<double>::FfnFactory ffn_factory<double>(const Config&, const MoeComms&, int, int);

}  // namespace finemoe
