#include "train/memory_budget.h"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <vector>

#include "util/check.h"

namespace finemoe {
namespace {

// Reads "MemAvailable:  123 kB" from /proc/meminfo; -1 if absent.
double mem_available() {
  std::ifstream in("/proc/meminfo");
  for (std::string key; in >> key;) {
    double kb = 0;
    std::string unit;
    in >> kb >> unit;
    if (key == "MemAvailable:") return kb * 1024.0;
  }
  return -1;
}

// The limit of the cgroup this process is in (v2 memory.max, else v1 memory.limit_in_bytes);
// -1 when unlimited or unknown.
double cgroup_limit() {
  std::string rel;
  {
    std::ifstream in("/proc/self/cgroup");
    for (std::string line; std::getline(in, line);) {
      const auto colon = line.rfind(':');
      if (line.rfind("0::", 0) == 0 && colon != std::string::npos) rel = line.substr(colon + 1);
    }
  }
  for (const std::string& file : {"/sys/fs/cgroup" + rel + "/memory.max", std::string("/sys/fs/cgroup/memory.max"),
                                  std::string("/sys/fs/cgroup/memory/memory.limit_in_bytes")}) {
    std::ifstream in(file);
    std::string text;
    if (!(in >> text)) continue;
    if (text == "max") return -1;
    try {
      const double v = std::stod(text);
      return v >= 1e18 ? -1 : v;  // v1 reports "unlimited" as a huge number
    } catch (const std::exception&) {
      continue;
    }
  }
  return -1;
}

}  // namespace

std::string format_bytes(double b) {
  const char* units[] = {"MiB", "GiB", "TiB", "PiB", "EiB"};
  double v = b / (1024.0 * 1024);
  int u = 0;
  while (v >= 1024 && u < 4) v /= 1024, ++u;
  char buf[48];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.1f %s" : "%.2f %s", v, units[u]);
  return buf;
}

MemoryBudget predict_memory(const Config& cfg, int world_size) {
  // Everything in double: the point is to answer sizes whose products overflow an int.
  const auto& m = cfg.model;
  const double d = m.d_model, blocks = m.n_blocks, vocab = m.vocab, ctx = m.context, heads = m.n_heads;
  const double scalar = cfg.train.precision == "fp64" ? 8 : 4;  // bf16 keeps fp32 storage
  const double ep = std::max(1, cfg.parallel.expert_parallel);
  const bool moe = cfg.moe.enabled;
  const double E = moe ? cfg.moe.expansion_rate : 0, G = moe ? cfg.moe.granularity : 1;
  const double n_experts = E * G;
  const double d_hidden = moe ? 4 * d / G : 4 * d;  // d_expert, or the dense FFN's d_ff

  // Parameters (src/model/*: embedding, head, attention, norms, router, experts or dense FFN).
  double replicated = (vocab + ctx) * d + (m.tied_embeddings ? 0 : d * vocab) + 2 * d;
  double per_block = 4 * d * d + 4 * d;
  per_block += moe ? d * n_experts + (cfg.moe.output_layernorm ? 2 * d : 0) : 8 * d * d;
  replicated += blocks * per_block;
  const double experts = moe ? blocks * n_experts * 2 * d * d_hidden / ep : 0;
  const double params = replicated + experts;

  MemoryBudget b;
  b.weights = params * scalar;
  b.gradients = params * scalar;
  b.optimizer = 2 * params * scalar;

  // Activations of one micro-batch of this rank's tokens. Per token and block: LayerNorm outputs,
  // QKV, attention output and residuals (about 9 d), attention probabilities (heads x context),
  // and the MoE copies of each token (input, two hidden widths, output) with router scores.
  const double tokens = double(cfg.train.micro_batch_size()) / std::max(1, world_size) * ctx;
  double copies = 1;
  if (moe) {
    copies = cfg.moe.routing == "token_choice" ? cfg.moe.effective_top_k() : G * cfg.moe.capacity_factor;
    copies = std::clamp(copies, 1.0, std::max(1.0, n_experts));
  }
  const double per_token_block = 9 * d + heads * ctx + copies * (2 * d + 2 * d_hidden) + n_experts;
  b.activations = tokens * (per_token_block * blocks + 2 * vocab) * scalar;
  // One block's working set during backward, the logits' gradient, and the micro-batch of tokens
  // (inputs and targets, int32) every rank samples.
  b.scratch = tokens * (per_token_block + vocab) * scalar + double(cfg.train.micro_batch_size()) * ctx * 8;
  // The expert exchange's send and receive buffers, forward and backward.
  b.communication = moe ? 4 * tokens * copies * d * scalar : 0;
  return b;
}

std::string describe(const MemoryBudget& b) {
  std::ostringstream os;
  os << "weights " << format_bytes(b.weights) << ", gradients " << format_bytes(b.gradients) << ", AdamW "
     << format_bytes(b.optimizer) << ", activations " << format_bytes(b.activations) << ", scratch "
     << format_bytes(b.scratch) << ", communication " << format_bytes(b.communication) << "; total "
     << format_bytes(b.total());
  return os.str();
}

void check_memory_fits(const MemoryBudget& b, double available_bytes, const std::string& where) {
  if (!(available_bytes > 0) || b.total() <= available_bytes) return;
  // The keys behind each part, the largest part first.
  struct Part {
    double bytes;
    const char* keys;
  };
  std::vector<Part> parts = {
      {b.weights + b.gradients + b.optimizer,
       "model.d_model, model.n_blocks, moe.expansion_rate (parameters; parallel.expert_parallel spreads the experts)"},
      {b.activations + b.scratch + b.communication,
       "train.micro_batch or train.batch_size, model.context, model.d_model, model.n_blocks, moe.granularity "
       "(activations)"}};
  std::sort(parts.begin(), parts.end(), [](const Part& x, const Part& y) { return x.bytes > y.bytes; });
  std::ostringstream os;
  os << "error: the run needs about " << format_bytes(b.total()) << " per rank (" << describe(b) << "), but "
     << format_bytes(available_bytes) << " is available (" << where << "); lower " << parts[0].keys;
  if (parts[1].bytes > 0.1 * b.total()) os << ", or " << parts[1].keys;
  throw InputError(os.str());
}

double host_memory_per_rank(int ranks_on_node, std::string* where) {
  const double avail = mem_available(), limit = cgroup_limit();
  double bytes = -1;
  std::string source;
  if (avail > 0) bytes = avail, source = "MemAvailable " + format_bytes(avail);
  if (limit > 0 && (bytes < 0 || limit < bytes)) bytes = limit, source = "cgroup memory.max " + format_bytes(limit);
  if (bytes < 0) return -1;
  const int n = std::max(1, ranks_on_node);
  if (where) *where = source + " / " + std::to_string(n) + " rank" + (n > 1 ? "s" : "") + " on this node";
  return bytes / n;
}

}  // namespace finemoe
