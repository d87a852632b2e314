#include "train/memory_budget.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <vector>

#include "model/memory_plan.h"
#ifdef FINEMOE_WITH_CUDA
#include <cuda_runtime_api.h>

#include "kernels/cuda_check.h"
#endif
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
  const MemoryPlan plan = plan_memory(cfg, std::max(1, world_size), cfg.train.device == "cuda");
  MemoryBudget b;
  b.weights = plan.category_total("parameters");
  b.gradients = plan.category_total("gradients");
  b.optimizer = plan.category_total("adamw");
  b.activations = plan.category_total("activations");
  b.scratch = plan.category_total("scratch");
  b.communication = plan.category_total("communication");
  b.allowance = plan.category_total("allowance");
  if (cfg.moe.enabled && cfg.moe.routing == "token_choice" && cfg.moe.capacity_factor == 0)
    b.dropless_rows = max_expert_rows(cfg, std::max(1, world_size));
  return b;
}

std::string describe(const MemoryBudget& b) {
  std::ostringstream os;
  os << "weights " << format_bytes(b.weights) << ", gradients " << format_bytes(b.gradients) << ", AdamW "
     << format_bytes(b.optimizer) << ", activations " << format_bytes(b.activations) << ", scratch "
     << format_bytes(b.scratch) << ", communication " << format_bytes(b.communication);
  if (b.allowance > 0) os << ", CUDA allowance " << format_bytes(b.allowance);
  os << "; total "
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
  if (b.dropless_rows > 0)
    os << "; dropless token choice (moe.capacity_factor = 0) is planned for its worst case, "
       << std::llround(b.dropless_rows) << " expert rows per rank and layer: a moe.capacity_factor > 0 bounds them";
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

double device_memory_per_rank(int ranks_on_node, std::string* where) {
#ifdef FINEMOE_WITH_CUDA
  size_t free_bytes = 0, total_bytes = 0;
  CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
  int devices = 1;
  CUDA_CHECK(cudaGetDeviceCount(&devices));
  const int sharing = (std::max(1, ranks_on_node) + devices - 1) / std::max(1, devices);
  if (where)
    *where = "cudaMemGetInfo: " + format_bytes(double(free_bytes)) + " free of " + format_bytes(double(total_bytes)) +
             " / " + std::to_string(sharing) + " rank" + (sharing > 1 ? "s" : "") + " on this GPU";
  return double(free_bytes) / sharing;
#else
  (void)ranks_on_node;
  (void)where;
  return -1;
#endif
}

}  // namespace finemoe
