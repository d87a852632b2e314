#pragma once
// Parameter and compute accounting in the paper's terms, taken from the tensors actually
// registered in a parameter store (by name), not from the configuration's formulas.
#include <cstdint>

#include "config/config.h"
#include "model/parameters.h"

namespace finemoe {

struct ModelCounts {
  int n_blocks = 0;
  // Parameters of the whole model (expert tensors counted for ALL experts, on every rank).
  int64_t attention = 0;       // blocks.*.attn.qkv, attn.out
  int64_t ffn = 0;             // dense FFN: blocks.*.ffn.w1, ffn.w2
  int64_t experts = 0;         // blocks.*.moe.experts.w1, w2, all experts
  int64_t experts_active = 0;  // expert weights one token passes through, on average (see below)
  int64_t shared_experts = 0;  // blocks.*.moe.shared.w1, w2: every token passes through all of them
  int64_t router = 0;          // blocks.*.moe.router
  int64_t embedding = 0;       // embed.token, embed.position
  int64_t head = 0;            // head.weight (0 when tied to embed.token)
  int64_t norms = 0;           // LayerNorm gains and biases (ln1, ln2, ln_f, moe.out_ln)
  int64_t other = 0;           // any tensor not named above

  // The paper's N: weight matrices of attention and FFN/experts; no LayerNorms, router,
  // embeddings or biases. d^2 (8E + 4) n_blocks for an MoE model, 12 d^2 n_blocks dense.
  // Shared experts count like expert weights (they are FFN weight matrices).
  int64_t n_total() const { return attention + ffn + experts + shared_experts; }
  // Active non-embedding parameters per token: 12 d^2 n_blocks (paper's definition); with S shared
  // experts (G - S routed) the same up to the swiglu rounding.
  int64_t n_active() const { return attention + ffn + experts_active + shared_experts; }
  int64_t n_embedding() const { return embedding + head; }
  int64_t n_router() const { return router; }
  int64_t n_stored() const { return n_total() + router + embedding + head + norms + other; }
  // Paper's compute model (Eq. 10): (12 d^2 c_f + d E G c_r) n_blocks per token, i.e. c_f per
  // active weight plus c_r per router weight.
  double flops_per_token(double c_f = 6, double c_r = 14) const {
    return c_f * static_cast<double>(n_active()) + c_r * static_cast<double>(n_router());
  }
  double flops(double tokens, double c_f = 6, double c_r = 14) const { return tokens * flops_per_token(c_f, c_r); }
};

// Counts the store's tensors. Expert tensors ([local experts, ...]) are scaled to
// cfg.n_experts() experts. Active expert weights per token = one expert's weights times the
// experts a token uses on average: G - S for expert choice (capacity factor 1, as the paper), top-k
// (G - S by default) for token choice; S = moe.shared_experts, whose weights are all active.
template <typename T>
ModelCounts count_parameters(const Config& cfg, const ParameterStore<T>& store);

}  // namespace finemoe
