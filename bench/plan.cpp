// finemoe-bench plan: predicts step time, communication share and MFU of a model on an allocation
// and recommends the expert-parallel size. The model and its constants: docs/performance.md.
#include "plan.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "bench_util.h"
#include "perf/calibration.h"
#include "perf/perf_model.h"
#include "sweep/allocation.h"

namespace finemoe::bench {
namespace {

using perf::Machine;
using perf::ModelShape;
using perf::Prediction;

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
    "  calibrate:  --peak-json gpu-peak.json --gemm-json gpu-expert-gemm.json --alltoall-json gpu-alltoall.json\n"
    "              (finemoe-bench gpu-* --json-out; --gemm-json also takes the CPU expert-gemm JSON)\n"
    "  precedence: defaults < --alloc < the JSON files < options (--peak-tflops, --mem-gb, --dense-eff,\n"
    "              --overhead and the byte sizes are applied before the JSON, which scales by them)\n"
    "  check:      --measured-step-s S  (prints the relative error of the prediction)\n";

}  // namespace

int run_plan(int argc, char** argv) {
  const Options o(argc, argv, 2);
  if (o.flag("help")) {
    std::fputs(kPlanUsage, stdout);
    return 0;
  }
  // Defaults, then the allocation file, then finemoe-bench JSON, then options (each later one wins).
  Machine m;
  if (o.has("alloc")) perf::apply_allocation(m, sweep::read_allocation(o.str("alloc", "")));
  const auto option = [&](const std::string& opt, double& field, double scale, const char* name) {
    if (!o.has(opt)) {
      o.num(opt, 0);  // mark as read
      return;
    }
    field = o.num(opt, 0) * scale;
    m.provenance[name] = "command line --" + opt;
  };
  double gpn = m.gpus_per_node;
  option("gpus-per-node", gpn, 1, "gpus_per_node");
  m.gpus_per_node = int(gpn);
  option("peak-tflops", m.peak, 1e12, "peak");
  option("mem-gb", m.mem_bytes, 1e9, "mem_bytes");
  option("dense-eff", m.dense_eff, 1, "dense_eff");
  option("overhead", m.overhead, 1, "overhead");
  option("act-bytes", m.act_bytes, 1, "act_bytes");
  option("grad-bytes", m.grad_bytes, 1, "grad_bytes");
  option("state-bytes", m.state_bytes_per_param, 1, "state_bytes_per_param");
  for (const char* key : {"peak-json", "alltoall-json", "gemm-json"}) {
    if (o.has(key)) perf::calibrate_from_json(m, o.str(key, ""));
  }
  option("nvlink-alpha-us", m.nv_alpha, 1e-6, "nv_alpha");
  option("nvlink-gbps", m.nv_beta, 1e9, "nv_beta");
  option("ib-alpha-us", m.ib_alpha, 1e-6, "ib_alpha");
  option("ib-gbps", m.ib_beta, 1e9, "ib_beta");
  if (o.has("expert-eff")) {
    m.expert_eff.clear();
    std::stringstream ss(o.str("expert-eff", ""));
    std::string item;
    while (std::getline(ss, item, ',')) {
      const auto colon = item.find(':');
      if (colon == std::string::npos) throw std::invalid_argument("--expert-eff wants d_expert:efficiency,...");
      m.expert_eff.push_back({std::stod(item.substr(0, colon)), std::stod(item.substr(colon + 1))});
    }
    std::sort(m.expert_eff.begin(), m.expert_eff.end());
    m.provenance["expert_eff"] = "command line --expert-eff";
  }
  if (m.gpus_per_node <= 0) throw std::invalid_argument("--gpus-per-node must be at least 1");

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
  std::printf("\n");
  for (const auto& [name, source] : m.provenance) std::printf("# constant %-22s <- %s\n", name.c_str(), source.c_str());
  std::printf("%-8s %6s %6s %5s %10s %9s %9s %9s %8s %7s %8s %4s\n", "model", "nodes", "devs", "EP", "step_s",
              "compute", "a2a", "ar_exp", "comm", "MFU", "mem_GB", "fits");
  for (const auto& shape : shapes) {
    std::printf("# %s: d_model %.0f, blocks %.0f, E %.0f, G %.0f (%.0f experts, d_expert %.0f), context %.0f, "
                "vocab %.0f, %.0f tokens/step (at least)\n",
                shape.name.c_str(), shape.d, shape.blocks, shape.E, shape.G, shape.E * shape.G, 4 * shape.d / shape.G, shape.context, shape.vocab, shape.batch_tokens);
    for (int nodes : nodes_list) {
      const int devices = nodes * m.gpus_per_node;
      ModelShape s = shape;  // this allocation's batch
      if (tokens_per_device > 0) s.batch_tokens = std::max(s.batch_tokens, tokens_per_device * devices);
      // Recommended: the fastest EP that fits in memory (else the smallest footprint).
      std::vector<Prediction> preds;
      size_t best = 0;
      if (ep_opt == "auto") {
        const Prediction chosen = perf::best_layout(s, m, devices, &preds);
        while (preds[best].ep != chosen.ep) ++best;
      } else {
        preds.push_back(perf::predict(s, m, devices, std::stoi(ep_opt)));
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
