// finemoe-bench plan: predicts step time, communication share and MFU of a model on an allocation
// and recommends the expert-parallel size. The model and its constants: docs/performance.md.
#include "plan.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "bench_util.h"

namespace finemoe::bench {
namespace {

struct ModelShape {
  std::string name = "custom";
  double d = 1024, blocks = 16, context = 256, vocab = 50257, E = 64, G = 8;
  double batch_tokens = 524288;  // global tokens per optimizer step (the paper: 0.5M)
  bool moe = true;
};

struct Machine {
  double peak = 989e12;           // dense peak FLOP/s per device (H100 SXM bf16)
  double mem_bytes = 80e9;        // per device
  double dense_eff = 0.6;         // large dense GEMM efficiency (fraction of peak)
  std::vector<std::pair<double, double>> expert_eff;  // (d_expert, efficiency relative to peak), sorted
  double overhead = 0.15;         // non-GEMM time as a fraction of GEMM time (norms, softmax, optimizer)
  double act_bytes = 2;           // activation element size in the all-to-all (bf16)
  double grad_bytes = 4;          // gradient element size in the all-reduce
  double state_bytes_per_param = 16;  // weights + master + grads + AdamW moments
  // Tiers: alpha (s per message), beta (bytes/s per device, one direction).
  double nv_alpha = 3e-6, nv_beta = 150e9;   // NVLink (H100 SXM: ~450 GB/s per direction peak, ~1/3 in all-to-all)
  double ib_alpha = 10e-6, ib_beta = 20e9;   // InfiniBand NDR 400 Gb/s per GPU, ~40% in all-to-all
  int gpus_per_node = 4;
};

double eff_at(const Machine& m, double d_expert) {
  const auto& t = m.expert_eff;
  if (t.empty()) return m.dense_eff;
  if (d_expert <= t.front().first) return t.front().second;
  if (d_expert >= t.back().first) return t.back().second;
  for (size_t i = 1; i < t.size(); ++i)
    if (d_expert <= t[i].first) {
      const double x0 = std::log(t[i - 1].first), x1 = std::log(t[i].first), x = std::log(d_expert);
      return t[i - 1].second + (t[i].second - t[i - 1].second) * (x - x0) / (x1 - x0);
    }
  return t.back().second;
}

struct Prediction {
  int ep = 1;
  double compute_s = 0, a2a_s = 0, allreduce_s = 0, allreduce_exposed_s = 0, step_s = 0;
  double comm_share = 0, mfu = 0, mem_bytes = 0, model_flops_per_token = 0;
  bool fits = true;
};

// One exchange of `bytes` per device over an EP group of `ep` consecutive devices.
double exchange_time(const Machine& m, int ep, double bytes) {
  if (ep <= 1) return 0;
  const int gpn = std::max(1, m.gpus_per_node);
  const int on_node = std::min(ep, gpn);
  double t = 0;
  t += m.nv_alpha * (on_node - 1) + bytes * double(on_node - 1) / ep / m.nv_beta;
  if (ep > gpn) t += m.ib_alpha * (ep - on_node) + bytes * double(ep - on_node) / ep / m.ib_beta;
  return t;
}

// Ring all-reduce of `bytes` over `n` devices, over IB when they span nodes.
double allreduce_time(const Machine& m, int n, double bytes, bool spans_nodes) {
  if (n <= 1) return 0;
  const double beta = spans_nodes ? m.ib_beta : m.nv_beta, alpha = spans_nodes ? m.ib_alpha : m.nv_alpha;
  return 2.0 * (n - 1) * alpha + 2.0 * double(n - 1) / n * bytes / beta;
}

Prediction predict(const ModelShape& s, const Machine& m, int devices, int ep) {
  Prediction p;
  p.ep = ep;
  const double d = s.d, nb = s.blocks, T = s.context, V = s.vocab;
  const double n_exp = s.moe ? s.E * s.G : 0, de = s.moe ? 4 * d / s.G : 4 * d;
  const double tokens_dev = s.batch_tokens / devices;
  // FLOPs per token (forward + backward = 3x forward GEMMs), as finemoe's GEMMs count them.
  const double attn_proj = 6 * 4 * d * d * nb, attn_scores = 12 * T * d * nb, head = 6 * d * V;
  const double ffn = 6 * 8 * d * d * nb;  // G experts of d x de and de x d, or the dense FFN
  const double router = 6 * d * n_exp * nb;
  p.model_flops_per_token = attn_proj + ffn + 14 * d * n_exp * nb + head;  // Eq. 10 + head
  const double dense_t = (attn_proj + attn_scores + head + router) / (m.peak * m.dense_eff);
  const double expert_t = ffn / (m.peak * (s.moe ? eff_at(m, de) : m.dense_eff));
  p.compute_s = tokens_dev * (dense_t + expert_t) * (1 + m.overhead);
  if (s.moe) {
    const double bytes = tokens_dev * s.G * d * m.act_bytes;  // copies of this device's tokens
    p.a2a_s = nb * 4 * exchange_time(m, ep, bytes);          // dispatch + return, forward and backward
  }
  const int gpn = std::max(1, m.gpus_per_node);
  const double rep_params = nb * (4 * d * d + d * n_exp + 4 * d) + (V + T) * d + 2 * d + (s.moe ? 0 : nb * 8 * d * d);
  const double exp_params = s.moe ? nb * n_exp * 2 * d * de : 0;
  const int dp_exp = devices / ep;
  p.allreduce_s = allreduce_time(m, devices, rep_params * m.grad_bytes, devices > gpn) +
                  allreduce_time(m, dp_exp, exp_params / ep * m.grad_bytes, dp_exp > 1 && devices > gpn);
  // Reductions start per block during backward (2/3 of the compute): only the rest is exposed.
  p.allreduce_exposed_s = std::max(0.0, p.allreduce_s - p.compute_s * 2.0 / 3.0);
  p.step_s = p.compute_s + p.a2a_s + p.allreduce_exposed_s;
  p.comm_share = (p.a2a_s + p.allreduce_exposed_s) / p.step_s;
  p.mfu = p.model_flops_per_token * s.batch_tokens / (p.step_s * devices * m.peak);
  p.mem_bytes = (rep_params + exp_params / ep) * m.state_bytes_per_param;
  p.fits = p.mem_bytes <= 0.7 * m.mem_bytes;  // the rest for activations
  return p;
}

// The paper's Table 2 (E = 64): active parameters and G; d_model = 64 n_blocks, N_act = 12 d^2 n_blocks.
struct PaperConfig {
  const char* name;
  double n_act, G, tokens;
};
const PaperConfig kPaper[] = {{"64x100M", 100e6, 8, 4.37e9},  {"64x1B", 1e9, 16, 28.94e9},
                              {"64x3B", 3e9, 16, 72.9e9},     {"64x7B", 7e9, 32, 137.6e9},
                              {"64x70B", 70e9, 32, 941.07e9}, {"64x300B", 300e9, 64, 2.96e12},
                              {"64x1T", 1e12, 64, 7.94e12}};

ModelShape paper_shape(const std::string& name) {
  for (const auto& c : kPaper)
    if (name == c.name) {
      ModelShape s;
      s.name = c.name;
      // 12 (64 nb)^2 nb = N_act  ->  nb = (N_act / (12 * 4096))^(1/3), rounded; d = 64 nb.
      s.blocks = std::round(std::cbrt(c.n_act / (12.0 * 4096)));
      s.d = 64 * s.blocks;
      s.E = 64;
      s.G = c.G;
      s.context = 256;
      s.vocab = 50257;
      s.batch_tokens = 524288;
      return s;
    }
  throw std::invalid_argument("unknown --paper config " + name + " (64x100M 64x1B 64x3B 64x7B 64x70B 64x300B 64x1T)");
}

// [section] key = value, '#' comments; keys as "section.key".
std::map<std::string, std::string> read_ini(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw std::invalid_argument("cannot read allocation file " + path);
  std::map<std::string, std::string> kv;
  std::string line, section;
  while (std::getline(f, line)) {
    const auto hash = line.find('#');
    if (hash != std::string::npos) line = line.substr(0, hash);
    auto trim = [](std::string x) {
      x.erase(0, x.find_first_not_of(" \t\r"));
      x.erase(x.find_last_not_of(" \t\r") + 1);
      return x;
    };
    line = trim(line);
    if (line.empty()) continue;
    if (line.front() == '[') {
      section = trim(line.substr(1, line.find(']') - 1));
      continue;
    }
    const auto eq = line.find('=');
    if (eq == std::string::npos) continue;
    kv[section + "." + trim(line.substr(0, eq))] = trim(line.substr(eq + 1));
  }
  return kv;
}

// Efficiency per expert size from `finemoe-bench expert-gemm --json` (fwd+bwd rate / dense rate,
// scaled by --dense-eff), read with a tiny scan of the JSON we write ourselves.
std::vector<std::pair<double, double>> read_gemm_json(const std::string& path, double dense_eff) {
  std::ifstream f(path);
  if (!f) throw std::invalid_argument("cannot read " + path);
  std::stringstream ss;
  ss << f.rdbuf();
  const std::string t = ss.str();
  auto num_after = [&](const std::string& key, size_t from, size_t& at) {
    at = t.find("\"" + key + "\": ", from);
    if (at == std::string::npos) return std::nan("");
    return std::strtod(t.c_str() + at + key.size() + 4, nullptr);
  };
  std::vector<std::pair<double, double>> out;
  size_t pos = 0, at = 0;
  while (true) {
    const double de = num_after("d_expert", pos, at);
    if (std::isnan(de)) break;
    size_t at2 = 0;
    double r = num_after("fwd_bwd_vs_dense", at, at2);
    if (!(r > 0)) r = num_after("fwd_vs_dense", at, at2);
    out.push_back({de, r * dense_eff});
    pos = at2 + 1;
  }
  if (out.empty()) throw std::invalid_argument(path + " holds no expert-gemm rows");
  std::sort(out.begin(), out.end());
  return out;
}

void print_prediction(const ModelShape& s, int nodes, int devices, const Prediction& p, bool best) {
  std::printf("%-8s %6d %6d %5d %10.3f %9.3f %9.3f %9.3f %7.1f%% %6.1f%% %8.1f %4s%s\n", s.name.c_str(), nodes, devices,
              p.ep, p.step_s, p.compute_s, p.a2a_s, p.allreduce_exposed_s, 100 * p.comm_share, 100 * p.mfu,
              p.mem_bytes / 1e9, p.fits ? "yes" : "no", best ? "  <- recommended EP" : "");
}

const char* kPlanUsage =
    "usage: finemoe-bench plan [model] [allocation] [machine]\n"
    "  model:      --paper 64x1B|...|64x1T|all  or  --d-model --blocks --context --vocab --E --G --batch-tokens\n"
    "  batch:      --batch-tokens 524288 (global) and/or --tokens-per-device T (default 8192 with --paper)\n"
    "  allocation: --nodes N (or a list 8,16,...) --gpus-per-node 4 --ep N|auto  [--alloc inputs/allocations/X.ini]\n"
    "  machine:    --peak-tflops 989 --mem-gb 80 --dense-eff 0.6 --gemm-json expert-gemm.json | --expert-eff d:e,...\n"
    "              --overhead 0.15 --act-bytes 2 --grad-bytes 4 --state-bytes 16\n"
    "              --nvlink-alpha-us 3 --nvlink-gbps 150 --ib-alpha-us 10 --ib-gbps 20\n"
    "  check:      --measured-step-s S  (prints the relative error of the prediction)\n";

}  // namespace

int run_plan(int argc, char** argv) {
  const Options o(argc, argv, 2);
  if (o.flag("help")) {
    std::fputs(kPlanUsage, stdout);
    return 0;
  }
  Machine m;
  std::map<std::string, std::string> ini;
  if (o.has("alloc")) ini = read_ini(o.str("alloc", ""));
  // An option wins over the allocation file, which wins over the built-in default.
  auto get = [&](const std::string& opt, const std::string& ini_key, double def) {
    if (o.has(opt)) return o.num(opt, def);
    o.num(opt, def);
    auto it = ini.find(ini_key);
    return it != ini.end() && !it->second.empty() ? std::stod(it->second) : def;
  };
  m.gpus_per_node = int(get("gpus-per-node", "allocation.gpus_per_node", 4));
  if (m.gpus_per_node <= 0) m.gpus_per_node = int(get("ranks-per-node", "allocation.ranks_per_node", 1));
  m.peak = get("peak-tflops", "network.peak_tflops", 989) * 1e12;
  m.mem_bytes = get("mem-gb", "network.memory_gb", 80) * 1e9;
  m.dense_eff = get("dense-eff", "network.dense_gemm_efficiency", 0.6);
  m.overhead = get("overhead", "network.overhead", 0.15);
  m.act_bytes = get("act-bytes", "network.activation_bytes", 2);
  m.grad_bytes = get("grad-bytes", "network.gradient_bytes", 4);
  m.state_bytes_per_param = get("state-bytes", "network.state_bytes_per_param", 16);
  m.nv_alpha = get("nvlink-alpha-us", "network.nvlink_alpha_us", 3) * 1e-6;
  m.nv_beta = get("nvlink-gbps", "network.nvlink_gbps", 150) * 1e9;
  m.ib_alpha = get("ib-alpha-us", "network.ib_alpha_us", 10) * 1e-6;
  m.ib_beta = get("ib-gbps", "network.ib_gbps", 20) * 1e9;
  if (o.has("gemm-json")) {
    m.expert_eff = read_gemm_json(o.str("gemm-json", ""), m.dense_eff);
  } else {
    // Planning default for H100 bf16 grouped GEMMs with ~2k rows per expert (assumed, relative to
    // peak); replace with `expert-gemm --json` from the target machine.
    std::string spec = o.str("expert-eff", "64:0.15,128:0.25,256:0.38,512:0.48,1024:0.55,4096:0.6");
    std::stringstream ss(spec);
    std::string item;
    while (std::getline(ss, item, ',')) {
      const auto colon = item.find(':');
      if (colon == std::string::npos) throw std::invalid_argument("--expert-eff wants d_expert:efficiency,...");
      m.expert_eff.push_back({std::stod(item.substr(0, colon)), std::stod(item.substr(colon + 1))});
    }
    std::sort(m.expert_eff.begin(), m.expert_eff.end());
  }

  std::vector<ModelShape> shapes;
  const std::string paper = o.str("paper", "");
  if (paper == "all") {
    for (const auto& c : kPaper) shapes.push_back(paper_shape(c.name));
  } else if (!paper.empty()) {
    shapes.push_back(paper_shape(paper));
  } else {
    ModelShape s;
    s.d = o.num("d-model", 1024);
    s.blocks = o.num("blocks", 16);
    s.context = o.num("context", 256);
    s.vocab = o.num("vocab", 50257);
    s.E = o.num("E", 64);
    s.G = o.num("G", 8);
    s.moe = !o.flag("dense");
    s.batch_tokens = o.num("batch-tokens", 524288);
    shapes.push_back(s);
  }
  if (o.has("batch-tokens") && !paper.empty())
    for (auto& s : shapes) s.batch_tokens = o.num("batch-tokens", 524288);
  // Weak scaling for the large configs: a fixed number of tokens per device per step (the paper's
  // 0.5M-token batch spread over 2048 GPUs would leave 256 tokens each).
  const double tokens_per_device = o.num("tokens-per-device", paper.empty() ? 0 : 8192);
  const std::vector<int> nodes_list = o.int_list("nodes", {8, 16, 32, 64, 128, 256, 512});
  const std::string ep_opt = o.str("ep", "auto");
  const double measured = o.num("measured-step-s", 0);
  const bool all_ep = o.flag("all-ep");
  const auto unused = o.unused();
  if (!unused.empty()) throw std::invalid_argument("unknown option --" + unused.front());

  std::printf("# plan: peak %.4g TFLOP/s/device, mem %.0f GB, dense eff %.2f, overhead %.2f, %d devices/node; "
              "NVLink alpha %.3g us beta %.3g GB/s; IB alpha %.3g us beta %.3g GB/s; expert eff:",
              m.peak * 1e-12, m.mem_bytes * 1e-9, m.dense_eff, m.overhead, m.gpus_per_node, m.nv_alpha * 1e6,
              m.nv_beta * 1e-9, m.ib_alpha * 1e6, m.ib_beta * 1e-9);
  for (auto& e : m.expert_eff) std::printf(" %g:%.3f", e.first, e.second);
  std::printf("\n%-8s %6s %6s %5s %10s %9s %9s %9s %8s %7s %8s %4s\n", "model", "nodes", "devs", "EP", "step_s",
              "compute", "a2a", "ar_exp", "comm", "MFU", "mem_GB", "fits");
  for (const auto& shape : shapes) {
    std::printf("# %s: d_model %.0f, blocks %.0f, E %.0f, G %.0f (%.0f experts, d_expert %.0f), context %.0f, "
                "vocab %.0f, %.0f tokens/step (at least)\n",
                shape.name.c_str(), shape.d, shape.blocks, shape.E, shape.G, shape.E * shape.G, 4 * shape.d / shape.G, shape.context, shape.vocab, shape.batch_tokens);
    for (int nodes : nodes_list) {
      const int devices = nodes * m.gpus_per_node;
      ModelShape s = shape;  // this allocation's batch
      if (tokens_per_device > 0) s.batch_tokens = std::max(s.batch_tokens, tokens_per_device * devices);
      std::vector<Prediction> preds;
      if (ep_opt == "auto") {
        for (int ep = 1; ep <= devices; ep *= 2)
          if (devices % ep == 0 && int(s.E * s.G) % ep == 0) preds.push_back(predict(s, m, devices, ep));
      } else {
        preds.push_back(predict(s, m, devices, std::stoi(ep_opt)));
      }
      // Recommended: the fastest that fits in memory (else the smallest footprint).
      size_t best = 0;
      for (size_t i = 1; i < preds.size(); ++i) {
        const auto& a = preds[i];
        const auto& b = preds[best];
        if ((a.fits && !b.fits) || (a.fits == b.fits && (a.fits ? a.step_s < b.step_s : a.mem_bytes < b.mem_bytes)))
          best = i;
      }
      if (ep_opt == "auto" && !all_ep) {
        print_prediction(s, nodes, devices, preds[best], true);
      } else {
        for (size_t i = 0; i < preds.size(); ++i) print_prediction(s, nodes, devices, preds[i], i == best && preds.size() > 1);
      }
      if (measured > 0)
        std::printf("# measured step %.4f s, predicted %.4f s: error %+.1f%%\n", measured, preds[best].step_s,
                    100 * (preds[best].step_s - measured) / measured);
    }
  }
  return 0;
}

}  // namespace finemoe::bench
