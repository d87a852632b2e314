#include "perf/perf_model.h"

#include <algorithm>
#include <cmath>

namespace finemoe::perf {

Machine::Machine() {
  expert_eff = default_expert_efficiency();
  for (const char* k : {"peak", "mem_bytes", "dense_eff", "expert_eff", "overhead", "act_bytes", "grad_bytes",
                        "state_bytes_per_param", "nv_alpha", "nv_beta", "ib_alpha", "ib_beta", "gpus_per_node",
                        "memory_fraction"}) {
    provenance[k] = "documented default (docs/performance.md)";
  }
}

std::vector<std::pair<double, double>> default_expert_efficiency() {
  // Planning default for H100 bf16 grouped GEMMs with ~2k rows per expert (assumed, relative to
  // peak); replace with finemoe-bench gpu-expert-gemm from the target machine.
  return {{64, 0.15}, {128, 0.25}, {256, 0.38}, {512, 0.48}, {1024, 0.55}, {4096, 0.6}};
}

double expert_efficiency(const Machine& m, double d_expert) {
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

double exchange_time(const Machine& m, int ep, double bytes) {
  if (ep <= 1) return 0;
  const int gpn = std::max(1, m.gpus_per_node);
  const int on_node = std::min(ep, gpn);
  double t = 0;
  t += m.nv_alpha * (on_node - 1) + bytes * double(on_node - 1) / ep / m.nv_beta;
  if (ep > gpn) t += m.ib_alpha * (ep - on_node) + bytes * double(ep - on_node) / ep / m.ib_beta;
  return t;
}

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
  const double expert_t = ffn / (m.peak * (s.moe ? expert_efficiency(m, de) : m.dense_eff));
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
  p.fits = p.mem_bytes <= m.memory_fraction * m.mem_bytes;
  return p;
}

Prediction best_layout(const ModelShape& s, const Machine& m, int devices, std::vector<Prediction>* all) {
  std::vector<Prediction> preds;
  const long experts = s.moe ? std::lround(s.E * s.G) : 1;
  for (int ep = 1; ep <= devices; ep *= 2)
    if (devices % ep == 0 && experts % ep == 0) preds.push_back(predict(s, m, devices, ep));
  size_t best = 0;
  for (size_t i = 1; i < preds.size(); ++i) {
    const auto& a = preds[i];
    const auto& b = preds[best];
    if ((a.fits && !b.fits) || (a.fits == b.fits && (a.fits ? a.step_s < b.step_s : a.mem_bytes < b.mem_bytes))) best = i;
  }
  const Prediction out = preds[best];
  if (all) *all = std::move(preds);
  return out;
}

}  // namespace finemoe::perf
