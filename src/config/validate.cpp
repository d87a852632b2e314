#include "config/validate.h"

#include <glob.h>
#include <sys/stat.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <sstream>

#include "config/options.h"
#include "util/check.h"

namespace finemoe {
namespace {

class Checker {
 public:
  explicit Checker(const Config& cfg) : cfg_(cfg) {}

  // Fails with: error in FILE: KEY = VALUE is invalid: WHAT.
  template <typename V>
  void require(bool ok, const std::string& key, const V& value, const std::string& what) const {
    if (ok) return;
    std::ostringstream os;
    const std::string origin = cfg_.origin_of(key);
    if (origin == "default")
      os << "error: " << key << " = " << value << " (the default) is invalid: " << what;
    else if (origin == "command line")
      os << "error on the command line: " << key << " = " << value << " is invalid: " << what;
    else
      os << "error in " << origin << ": " << key << " = " << value << " is invalid: " << what;
    throw InputError(os.str());
  }

  template <typename V>
  void positive(const std::string& key, V value) const {
    require(value > 0, key, value, "must be > 0");
  }

  void finite(const std::string& key, double value) const {
    require(std::isfinite(value), key, value, "must be a finite number");
  }

  void one_of(const std::string& key, const std::string& value,
              std::initializer_list<const char*> allowed) const {
    std::string list;
    for (const char* a : allowed) {
      if (value == a) return;
      list += (list.empty() ? "" : " | ") + std::string(a);
    }
    require(false, key, "'" + value + "'", "allowed: " + list);
  }

 private:
  const Config& cfg_;
};

// The nearest existing ancestor of `dir` (or dir itself) when it is not a directory, else "".
std::string blocking_file(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  for (fs::path p = fs::path(dir).lexically_normal(); !p.empty(); p = p.parent_path()) {
    const fs::file_status st = fs::status(p, ec);
    if (fs::exists(st)) return fs::is_directory(st) ? "" : p.string();
    if (p == p.parent_path()) break;
  }
  return "";
}

bool path_has_files(const std::string& pattern) {
  struct stat st {};
  if (stat(pattern.c_str(), &st) == 0) return true;
  glob_t g{};
  const bool found = glob(pattern.c_str(), 0, nullptr, &g) == 0 && g.gl_pathc > 0;
  globfree(&g);
  return found;
}

}  // namespace

void validate_config(const Config& cfg, const ValidationContext& ctx) {
  Checker c(cfg);
  const auto& m = cfg.model;
  const auto& moe = cfg.moe;
  const auto& t = cfg.train;
  const auto& p = cfg.parallel;
  const auto& o = cfg.output;

  // Every real-valued key; NaN already fails the range checks below, infinity would not.
  for (const auto& [key, value] : std::initializer_list<std::pair<const char*, double>>{
           {"model.init_scale", m.init_scale},
           {"moe.capacity_factor", moe.capacity_factor},
           {"moe.aux_loss_weight", moe.aux_loss_weight},
           {"moe.z_loss_weight", moe.z_loss_weight},
           {"train.lr", t.lr},
           {"train.final_lr", t.final_lr},
           {"train.warmup_fraction", t.warmup_fraction},
           {"train.weight_decay", t.weight_decay},
           {"train.beta1", t.beta1},
           {"train.beta2", t.beta2},
           {"train.eps", t.eps},
           {"train.grad_clip", t.grad_clip},
           {"parallel.watchdog_s", p.watchdog_s}})
    c.finite(key, value);

  c.positive("model.d_model", m.d_model);
  // Widths and expert counts are ints in the model (d_ff = 4 d_model, n_experts = E G).
  c.require(m.d_model <= std::numeric_limits<int>::max() / 4, "model.d_model", m.d_model,
            "must be <= " + std::to_string(std::numeric_limits<int>::max() / 4) + " (4 * d_model must fit an int)");
  c.positive("model.n_blocks", m.n_blocks);
  c.positive("model.n_heads", m.n_heads);
  c.positive("model.context", m.context);
  c.require(m.vocab >= 2 && m.vocab <= 65536, "model.vocab", m.vocab,
            "must be in [2, 65536] (tokens are stored as uint16)");
  c.require(m.d_model % m.n_heads == 0, "model.d_model", m.d_model,
            "must be divisible by model.n_heads = " + std::to_string(m.n_heads));
  c.one_of("model.activation", m.activation, {"relu", "gelu", "gelu_tanh", "swiglu"});
  c.positive("model.init_scale", m.init_scale);

  c.require(moe.enabled || moe.shared_experts == 0, "moe.shared_experts", moe.shared_experts,
            "needs moe.enabled = true (a dense model has no experts)");
  if (moe.enabled) {
    c.positive("moe.expansion_rate", moe.expansion_rate);
    c.positive("moe.granularity", moe.granularity);
    const int64_t experts_wide = int64_t(moe.expansion_rate) * moe.granularity;
    c.require(experts_wide <= std::numeric_limits<int>::max(), "moe.granularity", moe.granularity,
              "n_experts = E * G = " + std::to_string(experts_wide) + " must be <= " +
                  std::to_string(std::numeric_limits<int>::max()));
    if (!is_gated(m.activation))  // swiglu widths are rounded (ffn_hidden_width), not divided
      c.require((4 * m.d_model) % moe.granularity == 0, "moe.granularity", moe.granularity,
                "must divide d_ff = 4 * model.d_model = " + std::to_string(4 * m.d_model));
    c.require(moe.shared_experts >= 0 && moe.shared_experts < moe.granularity, "moe.shared_experts",
              moe.shared_experts,
              "must be in [0, moe.granularity - 1 = " + std::to_string(moe.granularity - 1) +
                  "] (the routed experts keep G - S > 0 of a token's activation)");
    c.one_of("moe.routing", moe.routing, {"expert_choice", "token_choice"});
    c.positive("moe.group_size", moe.group_size);
    const int n_experts = moe.n_experts(0);
    if (moe.routing == "expert_choice") {
      c.require(moe.balance == "aux_loss", "moe.balance", moe.balance,
                "bias balancing is for token_choice only: expert choice is balanced by construction "
                "(allowed with expert_choice: aux_loss, the default, which it ignores)");
      c.require(moe.group_size % moe.expansion_rate == 0, "moe.group_size", moe.group_size,
                "expert_choice needs a multiple of moe.expansion_rate = " +
                    std::to_string(moe.expansion_rate) + " (each expert takes group_size / E tokens)");
      c.require(moe.capacity_factor > 0, "moe.capacity_factor", moe.capacity_factor,
                "expert_choice needs a capacity factor > 0");
      const double capacity = moe.capacity_factor * moe.group_size / moe.expansion_rate *
                              moe.routed_granularity() / moe.granularity;
      c.require(capacity <= moe.group_size && capacity >= 1, "moe.capacity_factor", moe.capacity_factor,
                "expert capacity capacity_factor * group_size / E * (G - moe.shared_experts) / G must be in "
                "[1, group_size]");
    } else {
      c.require(moe.capacity_factor >= 0, "moe.capacity_factor", moe.capacity_factor,
                "must be >= 0 (0 = dropless)");
      c.require(moe.top_k >= 0 && moe.top_k <= n_experts, "moe.top_k", moe.top_k,
                "must be in [0, n_experts = " + std::to_string(n_experts) + "] (0 = G)");
      c.require(moe.effective_top_k() <= n_experts, "moe.granularity", moe.granularity,
                "top_k = G - moe.shared_experts exceeds n_experts");
      c.require(moe.aux_loss_weight >= 0, "moe.aux_loss_weight", moe.aux_loss_weight, "must be >= 0");
      c.one_of("moe.balance", moe.balance, {"aux_loss", "bias"});
      if (moe.balance == "bias")
        c.require(std::isfinite(moe.bias_rate) && moe.bias_rate > 0, "moe.bias_rate", moe.bias_rate,
                  "must be a finite number > 0 with moe.balance = bias");
      c.require(moe.z_loss_weight >= 0, "moe.z_loss_weight", moe.z_loss_weight, "must be >= 0");
    }
  }

  c.one_of("train.device", t.device, {"cpu", "cuda"});
  if (t.device == "cpu") {
    // bf16 on the CPU rounds GEMM inputs as the GPU's bf16 runs do (a reference for them, not faster).
    c.one_of("train.precision", t.precision, {"fp64", "fp32", "bf16"});
  } else {
    c.require(ctx.cuda_available, "train.device", t.device,
              "this build has no CUDA backend (configure with -DFINEMOE_CUDA=ON where nvcc exists)");
    c.one_of("train.precision", t.precision, {"fp32", "bf16"});
  }
  c.require(t.steps >= 0, "train.steps", t.steps, "must be >= 0");
  c.require(t.tokens >= 0, "train.tokens", t.tokens, "must be >= 0");
  c.require(t.steps > 0 || t.tokens > 0, "train.steps", t.steps,
            "set train.steps > 0 or a token budget train.tokens > 0");
  c.positive("train.batch_size", t.batch_size);
  c.require(t.micro_batch >= 0, "train.micro_batch", t.micro_batch, "must be >= 0");
  c.require(t.batch_size % t.micro_batch_size() == 0, "train.micro_batch", t.micro_batch,
            "must divide train.batch_size = " + std::to_string(t.batch_size));
  if (moe.enabled)
    c.require(t.micro_batch_size() % moe.group_size == 0, "moe.group_size", moe.group_size,
              "must divide the micro-batch of " + std::to_string(t.micro_batch_size()) +
                  " sequences (routing groups never straddle micro-batches)");
  c.positive("train.lr", t.lr);
  c.require(t.final_lr >= 0 && t.final_lr <= t.lr, "train.final_lr", t.final_lr,
            "must be in [0, train.lr]");
  c.require(t.warmup_fraction >= 0 && t.warmup_fraction < 1, "train.warmup_fraction", t.warmup_fraction,
            "must be in [0, 1)");
  c.require(t.weight_decay >= 0, "train.weight_decay", t.weight_decay, "must be >= 0");
  c.require(t.beta1 >= 0 && t.beta1 < 1, "train.beta1", t.beta1, "must be in [0, 1)");
  c.require(t.beta2 >= 0 && t.beta2 < 1, "train.beta2", t.beta2, "must be in [0, 1)");
  c.positive("train.eps", t.eps);
  c.require(t.grad_clip >= 0, "train.grad_clip", t.grad_clip, "must be >= 0 (0 = off)");
  c.require(t.eval_interval >= 0, "train.eval_interval", t.eval_interval, "must be >= 0");
  c.positive("train.eval_sequences", t.eval_sequences);
  c.require(t.eval_sequences % t.micro_batch_size() == 0, "train.eval_sequences", t.eval_sequences,
            "must be a multiple of the micro-batch of " + std::to_string(t.micro_batch_size()) +
                " sequences (evaluation runs in micro-batches)");
  c.require(t.threads >= 0, "train.threads", t.threads, "must be >= 0 (0 = automatic)");
  c.one_of("train.resume", t.resume, {"no", "auto"});
  c.require(t.stop_after >= 0, "train.stop_after", t.stop_after, "must be >= 0 (0 = run to the end)");
  c.require(!t.cuda_graph || t.device == "cuda", "train.cuda_graph", t.cuda_graph ? "true" : "false",
            "needs train.device = cuda (CUDA graphs); allowed here: false");

  c.positive("parallel.expert_parallel", p.expert_parallel);
  c.one_of("parallel.communicator", p.communicator, {"mpi", "nccl"});
  if (p.communicator == "nccl")
    c.require(t.device == "cuda", "parallel.communicator", p.communicator,
              "nccl needs train.device = cuda");
  c.require(p.watchdog_s >= 0, "parallel.watchdog_s", p.watchdog_s, "must be >= 0 (0 = off)");
  if (moe.enabled) {
    const int n_experts = moe.n_experts(0);
    c.require(n_experts % p.expert_parallel == 0, "parallel.expert_parallel", p.expert_parallel,
              "must divide n_experts = E * G = " + std::to_string(n_experts));
  }
  if (ctx.world_size > 0) {
    const int W = ctx.world_size;
    c.require(W % p.expert_parallel == 0, "parallel.expert_parallel", p.expert_parallel,
              "must divide the world size " + std::to_string(W) + " (world = EP x DP)");
    c.require(t.micro_batch_size() % W == 0, "train.batch_size", t.batch_size,
              "the micro-batch of " + std::to_string(t.micro_batch_size()) +
                  " sequences must be divisible by the world size " + std::to_string(W));
    if (moe.enabled) {
      const int local = t.micro_batch_size() / W;
      c.require(local % moe.group_size == 0 || moe.group_size % local == 0, "moe.group_size",
                moe.group_size,
                "must divide, or be a multiple of, the " + std::to_string(local) +
                    " sequences each rank holds per micro-batch");
      if (moe.group_size > local)
        c.require(moe.group_size % local == 0 && moe.group_size / local <= W, "moe.group_size",
                  moe.group_size, "a routing group may span at most all ranks");
    }
  }

  c.require(!o.dir.empty(), "output.dir", "''", "must name a directory");
  if (ctx.check_data_files) {
    const std::string file = blocking_file(o.dir);
    c.require(file.empty(), "output.dir", "'" + o.dir + "'",
              (file == o.dir ? "it is an existing file" : file + " is an existing file") +
                  std::string(", not a directory"));
  }
  c.positive("output.log_interval", o.log_interval);
  c.require(o.checkpoint_interval >= 0, "output.checkpoint_interval", o.checkpoint_interval,
            "must be >= 0 (0 = at the end and when signalled)");
  c.positive("output.keep_checkpoints", o.keep_checkpoints);

  if (ctx.check_data_files) {
    c.require(!cfg.data.train.empty(), "data.train", "''", "name the training shards (finemoe-prep makes them)");
    c.require(path_has_files(cfg.data.train), "data.train", "'" + cfg.data.train + "'",
              "no such file, directory or glob match");
    c.require(!cfg.data.val.empty(), "data.val", "''", "name the validation shards");
    c.require(path_has_files(cfg.data.val), "data.val", "'" + cfg.data.val + "'",
              "no such file, directory or glob match");
  }
}

}  // namespace finemoe
