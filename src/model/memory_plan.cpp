#include "model/memory_plan.h"

#include <algorithm>
#include <cmath>

namespace finemoe {
namespace {

// The routing shapes of one MoE layer on this rank (cpu::RoutingShape's arithmetic, in double).
struct MoeRows {
  double slots = 0;        // (group, position) pairs in the routing buffer
  double copies = 0;       // copies this rank sends (expert choice inside the rank: exact)
  double max_copies = 0;   // the copy arrays' size
  double received = 0;     // expert rows this rank holds
  double gathered = 0;     // all-gathered probabilities of a group spanning ranks (elements)
};

MoeRows moe_rows(const Config& cfg, double seqs, double tokens, int ep) {
  const MoeConfig& m = cfg.moe;
  const double ctx = cfg.model.context, E = cfg.n_experts(), gs = m.group_size;
  const bool spans = seqs < gs;
  const double buffer_seqs = spans ? gs : seqs;
  MoeRows r;
  r.slots = std::floor(buffer_seqs / gs) * ctx;
  if (spans) r.gathered = tokens * E * (gs / seqs);
  const bool token_choice = m.routing == "token_choice";
  const double k = m.effective_top_k();
  if (token_choice) {
    r.max_copies = tokens * k;
    r.copies = r.max_copies;  // at most: drops make it fewer
    // Every source sends at most its copies, and each token at most one copy per local expert.
    r.received = ep * std::min(r.max_copies, tokens * std::min(k, E / ep));
    return r;
  }
  const double cap = std::clamp(std::ceil(gs * m.routed_granularity() / E * m.capacity_factor - 1e-9), 1.0, gs);
  r.max_copies = std::min(r.slots * E * cap, tokens * E);
  r.copies = spans ? r.max_copies : r.slots * E * cap;
  // Inside the rank every rank sends the same counts, so a rank receives what it sends.
  r.received = spans ? ep * r.max_copies : r.copies;
  return r;
}

}  // namespace

double MemoryPlan::total() const {
  double t = 0;
  for (const MemoryItem& i : items) t += i.bytes;
  return t;
}

double MemoryPlan::category_total(const std::string& category) const {
  double t = 0;
  for (const MemoryItem& i : items)
    if (i.category == category) t += i.bytes;
  return t;
}

double sorted_scatter_scratch_bound(double n) {
  const double align = 256;  // each of the kernel's and CUB's allocations is rounded to 256 bytes
  return 3 * (4 * n + align) + (9 * n + 64 * 1024 + 8 * align);
}

double fused_attention_workspace_bound(double seqs, int n_heads, int context, int d) {
  const double T = context, padded_q = std::ceil(T / 64) * 64, padded_k = std::ceil(T / 128) * 128;
  return seqs * n_heads * (padded_q * padded_k * 2 + T * 4) + seqs * T * d * 4;
}

double max_expert_rows(const Config& cfg, int world) {
  if (!cfg.moe.enabled) return 0;
  const double seqs = double(cfg.train.micro_batch_size()) / world;
  return moe_rows(cfg, seqs, seqs * cfg.model.context, cfg.parallel.expert_parallel).received;
}

double stored_parameters(const Config& cfg) {
  const ModelConfig& mc = cfg.model;
  const double d = mc.d_model, nb = mc.n_blocks, V = mc.vocab, ctx = mc.context;
  double n = V * d + ctx * d + (mc.tied_embeddings ? 0 : d * V) + 2 * d;  // embeddings, head, ln_f
  double per_block = 2 * d + 2 * d + 4 * d * d;                              // ln1, ln2, attention
  const double gate = is_gated(mc.activation) ? 2 : 1;  // W1 columns per hidden column
  if (cfg.moe.enabled) {
    const double E = cfg.n_experts(), n_local = E / cfg.parallel.expert_parallel, de = cfg.d_expert();
    const double shared = cfg.moe.shared_experts * de;
    per_block += d * E + (cfg.moe.output_layernorm ? 2 * d : 0) + (gate + 1) * (n_local * d * de + d * shared) +
                 (cfg.moe.bias_balance() ? E : 0);  // router_bias
  } else {
    per_block += (gate + 1) * d * cfg.d_ff();
  }
  return n + nb * per_block;
}

MemoryPlan plan_memory(const Config& cfg, int world, bool gpu) {
  return plan_memory(cfg, world, gpu, gpu && cfg.train.precision == "bf16");
}

MemoryPlan plan_memory(const Config& cfg, int world, bool gpu, bool bf16_operands) {
  const ModelConfig& mc = cfg.model;
  const double S = cfg.train.precision == "fp64" ? 8 : 4;
  const double d = mc.d_model, nb = mc.n_blocks, V = mc.vocab, ctx = mc.context, H = mc.n_heads;
  const double seqs = double(cfg.train.micro_batch_size()) / world, t = seqs * ctx, td = t * d;
  const double params = stored_parameters(cfg);
  MemoryPlan p;
  auto add = [&p](const char* category, const char* name, double bytes) {
    if (bytes > 0) p.items.push_back({category, name, bytes});
  };
  add("parameters", "parameter values (fp32 master weights)", params * S);
  add("gradients", "parameter gradients", params * S);
  add("adamw", "AdamW first and second moments", 2 * params * S);
  add("scratch", "loss sums, gradient-norm sums", 4 * 8.0);
  add("parameters", "parameter values: bf16 copy for the products (bf16 operands)", bf16_operands ? params * 2 : 0);

  add("activations", "token ids (inputs, targets)", 2 * 4 * t);
  // A: the bytes of a kept activation (bf16 runs store them in bf16, backend/kept_activation.h;
  // each kind then has one block's fp32 working copy in the shared scratch).
  const bool bf16 = cfg.train.precision == "bf16";
  const double A = bf16 ? 2 : S;
  add("activations", "residual stream (block inputs, after attention), ln_f output", (2 * nb + 2) * td * S);
  add("activations", bf16 ? "ln1 output (one block: the attention keeps its bf16 copy)" : "ln1 outputs",
      (bf16 ? 1 : nb) * td * S);
  add("activations", "blocks.*.attn: input (bf16 copy of the ln1 output)", bf16 ? nb * td * A : 0);
  const double layer_norms = 2 * nb + 1 + (cfg.moe.enabled && cfg.moe.output_layernorm ? nb : 0);
  add("activations", "LayerNorm means and inverse deviations", layer_norms * 2 * t * S);
  const double scores = seqs * H * ctx * ctx;
  add("activations", "blocks.*.attn: qkv, head outputs", nb * 4 * td * A);
  add("activations", "blocks.*.attn: attention probabilities", nb * scores * A);
  add("scratch", "attention (shared): fp32 working input, qkv, probabilities, head outputs (bf16 storage)",
      bf16 ? (5 * td + scores) * S : 0);
  add("activations", "head: logits and their gradient", 2 * t * V * S);
  add("activations", "head: the logit gradient packed in bf16 (bf16 operands)", bf16_operands ? t * V * 2 : 0);
  add("scratch", "model: ln2 output, branch, residual gradient, block gradient", 4 * td * S);
  add("scratch", "attention backward: dqkv, d scores, d heads (shared)", (4 * td + scores) * S);
  add("scratch", "attention backward (shared): dy, then dqkv, packed in bf16 (bf16 operands)",
      bf16_operands ? 3 * td * 2 : 0);

  const double gate = is_gated(mc.activation) ? 2 : 1;  // pre-activation columns per hidden column
  // A dense FFN of this width in every block (model/dense_ffn.h): each keeps its input and
  // pre-activation; the activation (recomputed in the backward), gradients and working copies are
  // one layer's, shared.
  auto dense_ffns = [&](const std::string& name, const std::string& shared_name, double width) {
    add("activations", (name + ": input, pre-activation").c_str(), nb * (td + gate * t * width) * A);
    add("scratch", (shared_name + ": activation and its gradient (swiglu: and the pre-activation's)").c_str(),
        (2 + (gate > 1 ? gate : 0)) * t * width * S);
    add("scratch", (shared_name + ": fp32 working input and pre-activation (bf16 storage)").c_str(),
        bf16 ? (gate * t * width + (bf16_operands ? 0 : td)) * S : 0);
    add("scratch", (shared_name + ": dy, the activation then dpre, packed in bf16 (bf16 operands)").c_str(),
        bf16_operands ? (td + gate * t * width) * 2 : 0);
  };
  if (!cfg.moe.enabled) {
    dense_ffns("blocks.*.ffn", "ffn (shared)", cfg.d_ff());
  } else {
    const MoeConfig& m = cfg.moe;
    const int ep = cfg.parallel.expert_parallel;
    const double E = cfg.n_experts(), de = cfg.d_expert();
    const MoeRows r = moe_rows(cfg, seqs, t, ep);
    const bool token_choice = m.routing == "token_choice";
    const bool balance = token_choice && m.aux_loss_weight > 0;
    const double staged = ep > 1 ? r.copies * d * S : 0;
    add("activations", "blocks.*.moe: layer input", nb * td * A);
    add("activations", "blocks.*.moe: router logits, probabilities, aux sum", nb * (2 * t * E * S + 8));
    add("activations", "blocks.*.moe: gathered probabilities of spanning groups", nb * r.gathered * S);
    add("activations", "blocks.*.moe: copies (rows, experts, gates), counts",
        nb * (r.max_copies * (8 + S) + 2 * E * 8));
    add("activations", "blocks.*.moe: balance requests and gradient", balance ? nb * r.slots * E * (4 + S) : 0);
    add("activations", "blocks.*.moe: expert outputs", nb * r.received * d * A);
    add("activations", "blocks.*.moe.experts: pre-activations", nb * r.received * gate * de * A);
    const double shared = m.shared_experts * de;  // the shared experts: one dense FFN of this width
    if (shared > 0) dense_ffns("blocks.*.moe.shared", "moe.shared (shared)", shared);
    add("scratch", "moe (shared): shared experts' output and input gradient", shared > 0 ? td * S : 0);
    add("activations", "blocks.*.moe: combined output (out_ln input)", m.output_layernorm ? nb * td * A : 0);
    add("scratch", "moe (shared): fp32 working input, expert outputs, pre-activations, combined output (bf16 storage)",
        bf16 ? (td + r.received * (d + gate * de) + (m.output_layernorm ? td : 0)) * S : 0);
    add("communication", "blocks.*.moe: returned rows (staged)", nb * staged);
    add("scratch", "moe (shared): expert input rows, output gradients, input gradients", 3 * r.received * d * S);
    // Expert choice with an elementwise activation forms dh in one strided product (no da) when every
    // local expert has the same rows; a routing group spanning ranks may leave them unequal.
    const bool spans = seqs < m.group_size;
    const double activation_gradients = token_choice || gate > 1 || spans ? 1 + gate : gate;
    add("scratch", "moe (shared): expert activations and their gradients",
        (1 + activation_gradients) * r.received * de * S);
    add("scratch", "moe (shared): expert input rows (or dy), activations (or dh) packed in bf16 (bf16 operands)",
        bf16_operands ? r.received * (d + gate * de) * 2 : 0);
    add("scratch", "moe (shared): combined-output gradient, gate, probability and logit gradients",
        ((m.output_layernorm ? td : 0) + r.copies + 2 * t * E) * S + (token_choice && m.z_loss_weight > 0 ? 8 : 0));
    add("communication", "moe (shared): staged send rows (input, output gradient, input gradient)", 3 * staged);
    if (m.bias_balance()) {
      const double buffer_rows = (seqs < m.group_size ? m.group_size : seqs) * ctx;
      add("scratch", "moe (shared): selection scores (probabilities + bias) and the bias step",
          (buffer_rows * E + E) * S);
    }
  }
  if (gpu) {  // device-only buffers of the CUDA backend, then the stated allowances
    add("scratch", "per-row cross-entropy (CUDA)", t * 4);
    if (cfg.moe.enabled) {  // kernels/moe_routing.h's workspace, bounded from above
      const double E = cfg.n_experts(), gs = cfg.moe.group_size;
      const double buffer_rows = (seqs < gs ? gs : seqs) * ctx;
      const double slots = std::floor((seqs < gs ? gs : seqs) / gs) * ctx;
      add("scratch", "blocks.*.moe: routing workspace (CUDA)",
          nb * (slots * E * 4 + (cfg.moe.routing == "token_choice" ? buffer_rows * 8 : 0) + 1024 * E * 8 + 512));
    }
    // bf16 runs may take cuDNN's fused path instead (ops::select_attention): its operands, its workspace
    // (known only on a device: fused_attention_workspace_bound) and softmax statistics, but no
    // probabilities. A run takes one path: the larger is planned.
    const double fused = 16 * td + fused_attention_workspace_bound(seqs, mc.n_heads, mc.context, mc.d_model) +
                         nb * seqs * H * ctx * 4;
    const double probabilities = nb * scores * A + 2 * scores * S;
    if (bf16 && fused > probabilities)
      add("scratch", "attention: cuDNN's bf16 operands, workspace (bound), statistics beyond the probabilities (CUDA)",
          fused - probabilities);
    if (bf16_operands) {  // the products whose operands come without a bf16 copy: two buffers, each the widest
      const double widest = std::max(d, cfg.moe.enabled ? double(cfg.n_experts()) : 0.0);
      add("scratch", "products' operands packed in bf16 on the fly: router, head input (CUDA)",
          2 * t * widest * 2);
    }
    // Stream-ordered scratch that a kernel takes and frees within one call (one at a time): the
    // deterministic scatter-add's sort (the embedding's token rows, the MoE copies) or the LayerNorm
    // backward's partial sums (at most 1024 slices of 2 x d_model floats, kernels/layernorm.cu).
    const double copies = cfg.moe.enabled ? moe_rows(cfg, seqs, t, cfg.parallel.expert_parallel).max_copies : 0;
    const double scatter_rows = std::max(t, copies);
    const double kernel_scratch = std::max(sorted_scatter_scratch_bound(scatter_rows), 1024 * 2 * d * 4);
    add("scratch", "scatter-add sort or LayerNorm backward partials (CUDA, stream-ordered, one at a time)",
        kernel_scratch);
    // A captured step's stream-ordered scratch comes from the graph's own memory pool, which keeps it
    // between launches; allocations with disjoint lifetimes share addresses within a graph, so it
    // holds the largest (in 2 MiB pages); beside it the instantiated graph (stated).
    if (cfg.train.cuda_graph)
      add("allowance", "CUDA graph: memory-node pool (the scratch above, 2 MiB pages), the graph (stated 32 MiB)",
          std::ceil(kernel_scratch / (2 << 20)) * (2 << 20) + 32.0 * 1024 * 1024);
    add("allowance", "sum-of-squares partials (cudaMalloc)", 256 * 8);
    add("allowance", "CUDA context, kernel images (stated allowance)", 512.0 * 1024 * 1024);
    add("allowance", "cuBLAS workspace and grouped-GEMM pointer arrays (stated allowance)", 64.0 * 1024 * 1024);
    if (cfg.parallel.communicator == "nccl")
      add("allowance", "NCCL communicators: world, expert, data (stated allowance)", 3 * 128.0 * 1024 * 1024);
  }
  return p;
}

}  // namespace finemoe
