#include "reference_cases.h"

#include <algorithm>

#include "model/dense_ffn.h"
#include "model/moe/moe_layer.h"
#include "util/rng.h"

namespace finemoe::reference {
namespace {

Config tiny_model() {
  Config cfg;
  cfg.model.d_model = 16;
  cfg.model.n_blocks = 2;
  cfg.model.n_heads = 2;
  cfg.model.context = 8;
  cfg.model.vocab = 32;
  cfg.model.activation = "relu";
  cfg.model.tied_embeddings = true;
  cfg.model.init_scale = 0.1;
  cfg.moe.expansion_rate = 2;
  cfg.moe.granularity = 2;
  cfg.moe.group_size = 4;
  cfg.train.precision = "fp64";
  return cfg;
}

}  // namespace

std::vector<ReferenceCase> reference_cases() {
  std::vector<ReferenceCase> cases;

  Config ec = tiny_model();
  ec.moe.routing = "expert_choice";
  ec.moe.capacity_factor = 1.0;  // capacity ceil(4 * 2 / 4) = 2 of each group of 4 tokens
  ec.moe.output_layernorm = true;
  ec.train.seed = 11;
  cases.push_back({"expert_choice", ec, 8});

  Config tc = tiny_model();
  tc.moe.routing = "token_choice";
  tc.moe.top_k = 0;  // k = G = 2
  tc.moe.capacity_factor = 0.75;  // capacity ceil(0.75 * 4 * 2 / 4) = 2 of 8 requests: some drops
  tc.moe.output_layernorm = false;
  tc.moe.aux_loss_weight = 0.05;
  tc.moe.z_loss_weight = 0.01;
  tc.model.activation = "gelu";
  tc.train.seed = 12;
  cases.push_back({"token_choice", tc, 8});

  Config dense = tiny_model();
  dense.moe.enabled = false;
  dense.model.activation = "gelu";
  dense.model.tied_embeddings = false;
  dense.train.seed = 13;
  cases.push_back({"dense", dense, 4});

  // Issue 20's options (added to the file later; the cases above stay as they were written).
  // Shared expert with expert choice and swiglu: G = 2, S = 1 (routed activation 1: capacity
  // ceil(4 * 1 / 4) = 1 of each group of 4), expert width round8(8 * 16 / 6) = 24.
  Config shared_ec = tiny_model();
  shared_ec.moe.routing = "expert_choice";
  shared_ec.moe.shared_experts = 1;
  shared_ec.model.activation = "swiglu";
  shared_ec.train.seed = 14;
  cases.push_back({"shared_expert_choice_swiglu", shared_ec, 8});

  // Shared expert with token choice: E = 2, G = 4 (8 experts of width 16), S = 1, top-3,
  // capacity ceil(0.75 * 4 * 3 / 8) = 2: drops; balance and z-loss; GELU.
  Config shared_tc = tiny_model();
  shared_tc.moe.routing = "token_choice";
  shared_tc.moe.granularity = 4;
  shared_tc.moe.shared_experts = 1;
  shared_tc.moe.capacity_factor = 0.75;
  shared_tc.moe.output_layernorm = false;
  shared_tc.moe.aux_loss_weight = 0.05;
  shared_tc.moe.z_loss_weight = 0.01;
  shared_tc.model.activation = "gelu";
  shared_tc.train.seed = 15;
  cases.push_back({"shared_token_choice", shared_tc, 8});

  // Token choice with swiglu experts and two shared experts (G = 4, S = 2: top-2), dropping.
  Config swiglu_tc = shared_tc;
  swiglu_tc.moe.shared_experts = 2;
  swiglu_tc.moe.capacity_factor = 1.0;  // capacity ceil(4 * 2 / 8) = 1
  swiglu_tc.model.activation = "swiglu";
  swiglu_tc.train.seed = 16;
  cases.push_back({"swiglu_token_choice_two_shared", swiglu_tc, 8});

  // Dense swiglu: d_ff = round8(8 * 16 / 3) = 40.
  Config dense_swiglu = tiny_model();
  dense_swiglu.moe.enabled = false;
  dense_swiglu.model.activation = "swiglu";
  dense_swiglu.train.seed = 17;
  cases.push_back({"dense_swiglu", dense_swiglu, 4});

  // Loss-free balancing: token choice top-2 of 4 experts with drops; selection on p + bias (a
  // non-zero bias, ReferenceCase::router_bias_scale), gates p, no balance loss, z-loss 0.01.
  Config bias_tc = tiny_model();
  bias_tc.moe.routing = "token_choice";
  bias_tc.moe.balance = "bias";
  bias_tc.moe.capacity_factor = 0.75;
  bias_tc.moe.z_loss_weight = 0.01;
  bias_tc.train.seed = 18;
  cases.push_back({"bias_token_choice", bias_tc, 8, 0.02});

  // Expert choice with the tanh form of GELU: the experts' strided product with its activation
  // (ops::gemm_activation, the cuBLASLt GELU epilogue on a GPU).
  Config ec_tanh = ec;
  ec_tanh.model.activation = "gelu_tanh";
  ec_tanh.train.seed = 19;
  cases.push_back({"expert_choice_gelu_tanh", ec_tanh, 8});

  for (ReferenceCase& c : cases) {
    c.config.train.batch_size = c.n_seq;
    c.config.train.micro_batch = c.n_seq;
    c.config.train.steps = 1;
  }
  return cases;
}

std::vector<std::pair<std::string, std::string>> reference_config_items(const Config& cfg) {
  std::vector<std::pair<std::string, std::string>> items;
  for (const auto& [key, value] : config_items(cfg))
    if (key.rfind("model.", 0) == 0 || key.rfind("moe.", 0) == 0 || key == "train.seed") items.emplace_back(key, value);
  return items;
}

TokenBatch reference_batch(const ReferenceCase& c) {
  TokenBatch batch;
  batch.n_seq = c.n_seq;
  batch.context = c.config.model.context;
  batch.first_global_seq = 0;
  batch.loss_scale = 1.0 / double(batch.tokens());
  return batch;
}

std::vector<int32_t> reference_tokens(const ReferenceCase& c, const std::string& stream) {
  const uint64_t key = hash_combine(c.config.train.seed, hash_string("reference." + stream));
  const int vocab = c.config.model.vocab;
  std::vector<int32_t> tokens(size_t(c.n_seq) * c.config.model.context);
  for (size_t i = 0; i < tokens.size(); ++i)
    tokens[i] = std::min(vocab - 1, static_cast<int>(uniform_open(key, i) * vocab));
  return tokens;
}

void allocate_reference_weights(const ReferenceCase& c, ParameterStore<double>& store) {
  store.allocate(c.config.train.seed);
  if (c.router_bias_scale == 0) return;
  const std::string suffix = ".moe.router_bias";
  for (int i = 0; i < store.count(); ++i) {
    const ParamSpec& s = store.spec(i);
    if (s.name.size() < suffix.size() || s.name.compare(s.name.size() - suffix.size(), suffix.size(), suffix) != 0)
      continue;
    std::vector<double> bias(size_t(s.numel()));
    for (size_t e = 0; e < bias.size(); ++e) bias[e] = c.router_bias_scale * double(int(7 * e % 5) - 2) / 2;
    copy_to_device(store.values(s.group).data() + store.offset(i), bias.data(), bias.size());
  }
}

std::unique_ptr<Model<double>> make_reference_model(const Config& cfg, ParameterStore<double>& store) {
  return std::make_unique<Model<double>>(cfg, store, [&cfg](int block, ParameterStore<double>& s) {
    return cfg.moe.enabled ? make_moe_layer<double>(cfg, block, s, MoeComms{}, 0, 1)
                           : make_dense_ffn<double>(cfg, block, s);
  });
}

}  // namespace finemoe::reference
