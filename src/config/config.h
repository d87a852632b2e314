#pragma once
// The resolved configuration of a run: one struct per parameter-file section.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace finemoe {

struct ModelConfig {
  int d_model = 128;
  int n_blocks = 2;
  int n_heads = 4;
  int context = 64;
  int vocab = 256;
  std::string activation = "relu";  // relu | gelu | gelu_tanh | swiglu (gated: ffn_hidden_width)
  bool tied_embeddings = true;
  double init_scale = 0.1;  // truncated normal, std = sqrt(init_scale / fan_in)
};

struct MoeConfig {
  bool enabled = true;
  int expansion_rate = 8;  // E: expert parameters over one dense FFN's
  int granularity = 1;     // G: d_expert = 4 d_model / G, n_experts = E G
  std::string routing = "expert_choice";  // expert_choice | token_choice
  int group_size = 16;     // sequences per routing group (tokens grouped by position)
  double capacity_factor = 1.0;  // token_choice: 0 = dropless
  int top_k = 0;           // token_choice: experts per token, 0 = G
  bool output_layernorm = true;
  double aux_loss_weight = 0.01;  // token_choice load balancing
  double z_loss_weight = 0.001;   // token_choice router z-loss
  // S always-on experts of the routed experts' width (DeepSeekMoE): every token passes through
  // them; the routed activation drops by S (top-k = G - S, expert-choice capacity scaled by (G - S) / G).
  int shared_experts = 0;
  // token_choice load balancing: aux_loss (the Switch balance loss, aux_loss_weight) or bias
  // (loss-free: a per-expert bias on the selection scores, moved by bias_rate * sign(mean load -
  // load) after every optimizer step; no balance loss term).
  std::string balance = "aux_loss";
  double bias_rate = 1e-3;

  bool bias_balance() const { return routing == "token_choice" && balance == "bias"; }
  int n_experts(int) const { return expansion_rate * granularity; }
  // Routed experts a token uses on average: G - S.
  int routed_granularity() const { return granularity - shared_experts; }
  int effective_top_k() const { return top_k > 0 ? top_k : routed_granularity(); }
};

// Hidden width of an FFN of granularity G (G = 1: the dense FFN): 4 d_model / G, or for the gated
// swiglu (three matrices instead of two) 8 d_model / (3 G) rounded to the nearest multiple of 8
// (halves up), at least 8, so that its parameters are within rounding of the ungated FFN's.
int ffn_hidden_width(int d_model, int granularity, const std::string& activation);
// Whether the activation is gated: the first matrix then has 2 * hidden columns, [gate | up].
inline bool is_gated(const std::string& activation) { return activation == "swiglu"; }

struct TrainConfig {
  std::string device = "cpu";     // cpu | cuda
  std::string precision = "fp32"; // fp64 | fp32 | bf16 (per backend)
  uint64_t seed = 1;
  int64_t steps = 0;   // optimizer steps; 0 = derived from train.tokens
  int64_t tokens = 0;  // token budget D; used when train.steps = 0
  int batch_size = 32;  // global sequences per optimizer step
  int micro_batch = 0;  // global sequences per forward/backward; 0 = batch_size
  double lr = 2e-4;
  double final_lr = 2e-5;
  double warmup_fraction = 0.01;
  double weight_decay = 0.1;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double grad_clip = 1.0;  // global-norm clipping; 0 = off
  int eval_interval = 100;  // steps; 0 = only at the end
  int eval_sequences = 64;  // held-out sequences per evaluation
  int threads = 0;  // BLAS/OpenMP threads per rank; 0 = OMP_NUM_THREADS, else node cores / ranks
  std::string resume = "no";  // no | auto
  int64_t stop_after = 0;  // steps to run in this invocation, then checkpoint and exit 75; 0 = off
  bool cuda_graph = false;  // cuda: capture the expert-choice step once as a CUDA graph and replay it

  int accumulation_steps() const { return batch_size / (micro_batch > 0 ? micro_batch : batch_size); }
  int micro_batch_size() const { return micro_batch > 0 ? micro_batch : batch_size; }
};

struct DataConfig {
  std::string train;  // shard file, directory or glob (llm.c format)
  std::string val;
};

struct ParallelConfig {
  int expert_parallel = 1;  // EP size; DP = world / EP
  std::string communicator = "mpi";  // mpi | nccl
  double watchdog_s = 600;  // report a collective that has not completed in this time; 0 = off
  int device_id = -1;  // GPU index; -1 = node-local rank % device count
};

struct OutputConfig {
  std::string dir = "runs/default";
  int log_interval = 10;
  int checkpoint_interval = 0;  // steps; 0 = only when signalled and at the end
  int keep_checkpoints = 2;
  bool overwrite = false;  // replace an existing completed record
};

struct Config {
  ModelConfig model;
  MoeConfig moe;
  TrainConfig train;
  DataConfig data;
  ParallelConfig parallel;
  OutputConfig output;

  // Where the run came from (for the record); not options themselves.
  std::string config_file;
  std::string config_text;
  std::string command_line;
  // Where each explicitly set key came from ("inputs/x.ini" or "command line").
  std::map<std::string, std::string> key_origin;
  std::string origin_of(const std::string& key) const;

  int n_experts() const { return moe.enabled ? moe.expansion_rate * moe.granularity : 0; }
  int d_expert() const { return ffn_hidden_width(model.d_model, moe.granularity, model.activation); }
  // The dense FFN's hidden width (d_ff = 4 d_model, or the swiglu width at G = 1).
  int d_ff() const { return ffn_hidden_width(model.d_model, 1, model.activation); }
  // Steps actually run: train.steps, or train.tokens / tokens per step.
  int64_t total_steps() const;
  int64_t tokens_per_step() const { return int64_t(train.batch_size) * model.context; }
};

// Key = value pairs of the resolved configuration, in the order the options are declared
// (dotted keys, values in parameter-file syntax).
std::vector<std::pair<std::string, std::string>> config_items(const Config& cfg);

// The keys a resume cannot change (the model, routing, batch, optimizer, schedule, seed, precision
// and evaluation: everything the trajectory depends on except the EP x DP layout, micro-batching,
// threads and paths), as config_items formats them. Checkpoints record them (docs/checkpoints.md).
std::vector<std::pair<std::string, std::string>> config_resume_items(const Config& cfg);

// The resolved configuration as a parameter file that can be saved and run again.
std::string config_to_ini(const Config& cfg);

}  // namespace finemoe
