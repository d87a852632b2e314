#pragma once
// What the whole-step tests share (layout_mpi_test; tests/gpu/model_gpu_test): a small synthetic
// corpus, the configuration of the test model, training a layout on a communicator and recording
// what it produced, and the relative differences the comparisons use.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "config/validate.h"
#include "data/batch_sampler.h"
#include "data/shard.h"
#include "data/token_dataset.h"
#include "model/moe/moe_layer.h"
#include "parallel/mpi_check.h"
#include "parallel/process_grid.h"
#include "train/engine.h"
#include "train/lr_schedule.h"
#include "util/rng.h"

namespace finemoe::test {

namespace fs = std::filesystem;

constexpr int kSteps = 20;
constexpr int kVocab = 32;
constexpr int kContext = 8;

struct Case {
  std::string name;
  std::string routing = "expert_choice";
  int E = 4, G = 2;
  int group_size = 4;
  int batch = 16, micro = 0;
  double capacity_factor = 1.0;
  int top_k = 0;
  bool output_layernorm = true;
  double init_scale = 0.1;
  int shared_experts = 0;
  std::string activation = "relu";
  double router_skew = 0;  // skew_router(): > 0 sends most tokens to expert 0
  std::string balance = "aux_loss";
  double bias_rate = 1e-3;
  bool expect_drops = false;
  bool expect_idle_expert = false;
  int steps = kSteps;
};

inline const std::vector<std::pair<int, int>> kLayouts = {{1, 1}, {2, 2}, {2, 1}, {4, 4}, {4, 2}};

// A small synthetic corpus with structure to learn: a noisy affine recurrence over the vocabulary.
// Rank 0 writes it once; every rank reads it.
class Corpus {
 public:
  Corpus() {
    MpiCommunicator world(MPI_COMM_WORLD);
    int64_t id = world.rank() == 0 ? int64_t(::getpid()) : 0;
    world.broadcast(&id, 1, DType::i64, 0);
    dir_ = fs::path(::testing::TempDir()) / ("finemoe_layout_" + std::to_string(id));
    if (world.rank() == 0) {
      fs::create_directories(dir_);
      std::vector<uint16_t> tokens(8192);
      uint32_t t = 1;
      for (size_t i = 0; i < tokens.size(); ++i) {
        const double u = uniform_open(99, i);
        t = u < 0.25 ? uint32_t(u * 4 * kVocab) % kVocab : (5 * t + 3) % kVocab;
        tokens[i] = uint16_t(t);
      }
      write_shard((dir_ / "train.bin").string(), tokens.data(), tokens.size());
    }
    world.barrier();
    data_ = std::make_unique<TokenDataset>((dir_ / "train.bin").string(), kVocab, "data.train");
  }
  ~Corpus() {
    MpiCommunicator world(MPI_COMM_WORLD);
    world.barrier();
    if (world.rank() == 0) fs::remove_all(dir_);
  }
  const TokenDataset& data() const { return *data_; }

 private:
  fs::path dir_;
  std::unique_ptr<TokenDataset> data_;
};

inline Config make_config(const Case& c, const std::string& precision) {
  Config cfg;
  cfg.model.d_model = 16;
  cfg.model.n_blocks = 2;
  cfg.model.n_heads = 2;
  cfg.model.context = kContext;
  cfg.model.vocab = kVocab;
  cfg.model.init_scale = c.init_scale;
  cfg.model.activation = c.activation;
  cfg.moe.shared_experts = c.shared_experts;
  cfg.moe.balance = c.balance;
  cfg.moe.bias_rate = c.bias_rate;
  cfg.moe.routing = c.routing;
  cfg.moe.expansion_rate = c.E;
  cfg.moe.granularity = c.G;
  cfg.moe.group_size = c.group_size;
  cfg.moe.capacity_factor = c.capacity_factor;
  cfg.moe.top_k = c.top_k;
  cfg.moe.output_layernorm = c.output_layernorm;
  cfg.moe.aux_loss_weight = 0.05;
  cfg.moe.z_loss_weight = 0.01;
  cfg.train.precision = precision;
  cfg.train.seed = 7;
  cfg.train.steps = c.steps;
  cfg.train.batch_size = c.batch;
  cfg.train.micro_batch = c.micro;
  cfg.train.lr = 1e-2;
  cfg.train.final_lr = 1e-3;
  cfg.train.warmup_fraction = 0.1;
  cfg.train.grad_clip = 0.5;  // active: the global norm enters every update
  cfg.train.eval_sequences = c.batch;
  cfg.train.threads = 1;
  return cfg;
}

// What one layout produced. Expert tensors hold this rank's shard.
template <typename T>
struct Trained {
  std::vector<double> loss, aux_loss, grad_norm;
  std::vector<T> grads[2];   // raw gradients of step 1 (after the reduction, before the update)
  std::vector<T> values[2];  // parameters after the last step
  std::vector<ParamSpec> specs;
  std::vector<int64_t> offsets;
  // Step 1, last micro-batch: per block, [micro-batch token][global expert] = 1 where the token
  // was routed to the expert (summed over the layout's ranks, so every rank holds all of it).
  std::vector<std::vector<int32_t>> routed;
  std::vector<int64_t> expert_load;  // step 1, tokens per (block, expert), whole layout
  int64_t requested = 0, dropped = 0;
};

// Skews every MoE layer's router towards expert 0 at initialisation, the same on every layout (both
// tensors are replicated): blocks.*.ln2.bias[0] = 3 and router[0][0] = skew, so expert 0's logit
// gains skew * (3 + the normalised feature 0), about 3 skew for most tokens.
template <typename T>
void skew_router(ParameterStore<T>& store, double skew) {
  auto set = [&](const std::string& suffix, T value) {
    for (int i = 0; i < store.count(); ++i) {
      const ParamSpec& s = store.spec(i);
      if (s.name.size() < suffix.size() || s.name.compare(s.name.size() - suffix.size(), suffix.size(), suffix) != 0)
        continue;
      copy_to_device(store.values(s.group).data() + store.offset(i), &value, 1);  // element [0] / [0][0]
    }
  };
  set(".ln2.bias", T(3));
  set(".moe.router", T(skew));
}

template <typename T>
Trained<T> train(const Config& cfg, MPI_Comm comm, int ep, const BatchSampler& data, int steps,
                 double router_skew = 0) {
  ProcessGrid grid(comm, ep);
  TrainingEngine<T> engine(cfg, grid);
  if (router_skew > 0) skew_router(engine.store(), router_skew);
  LrSchedule schedule(cfg.train.lr, cfg.train.final_lr, cfg.train.warmup_fraction, cfg.total_steps());
  Trained<T> out;
  auto& store = engine.store();
  for (int i = 0; i < store.count(); ++i) {
    out.specs.push_back(store.spec(i));
    out.offsets.push_back(store.offset(i));
  }

  // Step 1's raw gradients and routing; the step itself is then taken by step() (which computes
  // the same gradients again, from the same parameters and batch).
  engine.compute_gradients(0, data);
  for (int g = 0; g < 2; ++g) out.grads[g] = to_host(store.grads(ParamGroup(g)));
  const int micro_tokens = cfg.train.micro_batch_size() * cfg.model.context;
  const int local_tokens = micro_tokens / grid.world_size();
  for (auto* ffn : engine.model().ffn_layers()) {
    auto* moe = dynamic_cast<MoeLayer<T>*>(ffn);
    if (!moe) continue;
    std::vector<int32_t> routed(size_t(micro_tokens) * size_t(cfg.n_experts()), 0);
    const auto rows = moe->copy_rows(), experts = moe->copy_experts();
    for (size_t k = 0; k < rows.size(); ++k) {
      const int64_t token = int64_t(grid.rank()) * local_tokens + rows[k];
      routed[size_t(token) * size_t(cfg.n_experts()) + size_t(experts[k])] += 1;
    }
    grid.world().all_reduce_sum(routed.data(), routed.size());
    out.routed.push_back(std::move(routed));
  }
  const StepMetrics m = engine.metrics();
  out.expert_load = m.expert_load;
  out.requested = m.assignments_requested;
  out.dropped = m.assignments_dropped;

  for (int s = 0; s < steps; ++s) {
    const StepResult r = engine.step(s, schedule.at(s), data);
    out.loss.push_back(r.loss);
    out.aux_loss.push_back(r.aux_loss);
    out.grad_norm.push_back(r.grad_norm);
  }
  for (int g = 0; g < 2; ++g) out.values[g] = to_host(store.values(ParamGroup(g)));
  return out;
}

// max |a - b| / max |b| over n elements.
template <typename T>
double rel_max(const T* a, const T* b, int64_t n) {
  double diff = 0, scale = 0;
  for (int64_t i = 0; i < n; ++i) {
    diff = std::max(diff, std::abs(double(a[i]) - double(b[i])));
    scale = std::max(scale, std::abs(double(b[i])));
  }
  return scale > 0 ? diff / scale : diff;
}

// ||a - b|| / ||b|| over n elements.
template <typename T>
double rel_norm(const T* a, const T* b, int64_t n) {
  double diff = 0, scale = 0;
  for (int64_t i = 0; i < n; ++i) {
    diff += (double(a[i]) - double(b[i])) * (double(a[i]) - double(b[i]));
    scale += double(b[i]) * double(b[i]);
  }
  return scale > 0 ? std::sqrt(diff / scale) : std::sqrt(diff);
}

inline double rel_scalar(double a, double b) { return std::abs(a - b) / std::max(std::abs(b), 1e-300); }

// Largest per-tensor difference of a buffer (grads or values) between a layout and the reference,
// expert tensors by global expert id. `measure` is rel_max or rel_norm.
template <typename T, typename Measure>
double tensor_diff(const Trained<T>& par, const std::vector<T>* par_buf, const Trained<T>& ref,
                   const std::vector<T>* ref_buf, Measure measure, std::string* worst) {
  double max_diff = 0;
  for (size_t i = 0; i < par.specs.size(); ++i) {
    const ParamSpec& s = par.specs[i];
    EXPECT_EQ(s.name, ref.specs[i].name);
    const int g = int(s.group);
    const int64_t ref_off = ref.offsets[i] + s.first_global_expert * s.numel_per_expert();
    const double d = measure(par_buf[g].data() + par.offsets[i], ref_buf[g].data() + ref_off, s.numel());
    if (d > max_diff || !std::isfinite(d)) {
      max_diff = d;
      *worst = s.name;
    }
  }
  return max_diff;
}

inline int world_rank() {
  int r = 0;
  MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &r));
  return r;
}

inline int world_size() {
  int n = 0;
  MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &n));
  return n;
}

// Largest relative gap between the n-step moving averages of two loss curves.
inline double moving_average_gap(const std::vector<double>& got, const std::vector<double>& ref, size_t n) {
  double worst = 0;
  for (size_t end = n; end <= std::min(got.size(), ref.size()); ++end) {
    double a = 0, b = 0;
    for (size_t i = end - n; i < end; ++i) {
      a += got[i];
      b += ref[i];
    }
    worst = std::max(worst, std::abs(a - b) / std::abs(b));
  }
  return worst;
}

}  // namespace finemoe::test
