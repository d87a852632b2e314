#pragma once
// The tiny models of the reference state (tests/reference/README.md): their configurations, seeds
// and token batches, shared by the program that writes finemoe's initial state for the PyTorch
// reference and by the test that compares finemoe with that reference.
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "config/config.h"
#include "model/feed_forward.h"
#include "model/model.h"
#include "model/parameters.h"

namespace finemoe::reference {

struct ReferenceCase {
  std::string name;  // the case's group in the reference file
  Config config;     // model.* and moe.*; train.seed seeds the initialisation and the tokens
  int n_seq = 0;     // sequences of the one batch (a multiple of moe.group_size)
  // moe.balance = bias: the routing bias as after some balancing steps (it starts at 0, which
  // would select as without it): element e of every blocks.*.moe.router_bias is
  // router_bias_scale * ((7 e) % 5 - 2) / 2.
  double router_bias_scale = 0;
};

// expert_choice (E = 2, G = 2, output LayerNorm), token_choice (top-2 with drops, balance and
// z-loss, no output LayerNorm, GELU) and dense (GELU, untied head); then issue 20's options:
// shared experts (expert and token choice), swiglu experts and the swiglu dense FFN.
std::vector<ReferenceCase> reference_cases();

// The configuration keys the reference depends on (model.*, moe.*, train.seed) with their values
// in parameter-file syntax; stored with each case, so a changed case is caught.
std::vector<std::pair<std::string, std::string>> reference_config_items(const Config& cfg);

// The whole batch on one rank: first global sequence 0, loss_scale = 1 / tokens.
TokenBatch reference_batch(const ReferenceCase& c);

// Input and target tokens, [n_seq * context], drawn from (train.seed, stream name).
std::vector<int32_t> reference_tokens(const ReferenceCase& c, const std::string& stream);

// store.allocate(train.seed), then the case's router bias (ReferenceCase::router_bias_scale).
void allocate_reference_weights(const ReferenceCase& c, ParameterStore<double>& store);

// The float64 model of the case on one process (MoE without communicators); the caller then
// allocates the store.
std::unique_ptr<Model<double>> make_reference_model(const Config& cfg, ParameterStore<double>& store);

}  // namespace finemoe::reference
