#pragma once
// Shared pieces of the MoE unit tests: tiny configurations, deterministic inputs, and a plain
// reference MoE (loops only: no dispatch, no batching, no BLAS) to hold the layer against.
#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "config/config.h"
#include "util/rng.h"

namespace finemoe::test {

inline Config tiny_moe_config(const std::string& routing, int E, int G, int group_size) {
  Config cfg;
  cfg.model.d_model = 8;
  cfg.model.activation = "gelu";
  cfg.model.init_scale = 1.0;  // well separated router probabilities: no near-ties in the checks
  cfg.moe.routing = routing;
  cfg.moe.expansion_rate = E;
  cfg.moe.granularity = G;
  cfg.moe.group_size = group_size;
  cfg.moe.output_layernorm = false;
  return cfg;
}

// Values in [-scale, scale) from (key, index).
template <typename T>
std::vector<T> random_values(int64_t n, uint64_t key, double scale = 1.0) {
  std::vector<T> v(n);
  for (int64_t i = 0; i < n; ++i) v[i] = static_cast<T>(scale * (2 * uniform_open(key, i) - 1));
  return v;
}

// The plain reference: router by loops, selection by repeated arg-max, each kept (token, expert)
// pair through its expert by loops. x [n_seq * context, d_model] of global sequences
// [0, n_seq); returns y before the output LayerNorm and the kept pairs (token row, expert).
struct ReferenceMoe {
  std::vector<double> y;
  std::vector<std::pair<int, int>> kept;
};

inline double reference_activation(double v, const std::string& activation) {
  if (activation == "relu") return v > 0 ? v : 0;
  return 0.5 * v * (1 + std::erf(v / std::sqrt(2.0)));
}

inline ReferenceMoe reference_moe(const Config& cfg, const std::vector<double>& x, int n_seq, int context,
                                  const double* router, const double* w1, const double* w2) {
  const int d = cfg.model.d_model, ne = cfg.n_experts(), de = cfg.d_expert(), gs = cfg.moe.group_size;
  const int64_t tokens = int64_t(n_seq) * context;
  std::vector<double> p(tokens * ne);
  for (int64_t t = 0; t < tokens; ++t) {
    double mx = -1e300;
    for (int e = 0; e < ne; ++e) {
      double l = 0;
      for (int i = 0; i < d; ++i) l += x[t * d + i] * router[i * ne + e];
      p[t * ne + e] = l;
      mx = std::max(mx, l);
    }
    double s = 0;
    for (int e = 0; e < ne; ++e) s += (p[t * ne + e] = std::exp(p[t * ne + e] - mx));
    for (int e = 0; e < ne; ++e) p[t * ne + e] /= s;
  }
  ReferenceMoe out;
  for (int g = 0; g < n_seq / gs; ++g)
    for (int pos = 0; pos < context; ++pos) {
      std::vector<int> members;  // token rows of the group in global order
      for (int i = 0; i < gs; ++i) members.push_back((g * gs + i) * context + pos);
      if (cfg.moe.routing == "expert_choice") {
        const int cap = int(std::ceil(double(gs) * cfg.moe.granularity / ne * cfg.moe.capacity_factor - 1e-9));
        for (int e = 0; e < ne; ++e) {
          std::vector<bool> taken(gs, false);
          for (int c = 0; c < cap; ++c) {
            int best = -1;
            for (int i = 0; i < gs; ++i)
              if (!taken[i] && (best < 0 || p[members[i] * ne + e] > p[members[best] * ne + e])) best = i;
            taken[best] = true;
            out.kept.push_back({members[best], e});
          }
        }
      } else {
        const int k = cfg.moe.effective_top_k();
        const double cf = cfg.moe.capacity_factor;
        const int cap = cf == 0 ? gs : int(std::ceil(cf * gs * k / ne - 1e-9));
        std::vector<int> load(ne, 0);
        for (int i = 0; i < gs; ++i) {
          std::vector<bool> taken(ne, false);
          for (int c = 0; c < k; ++c) {
            int best = -1;
            for (int e = 0; e < ne; ++e)
              if (!taken[e] && (best < 0 || p[members[i] * ne + e] > p[members[i] * ne + best])) best = e;
            taken[best] = true;
            if (load[best] < cap) {
              ++load[best];
              out.kept.push_back({members[i], best});
            }
          }
        }
      }
    }
  out.y.assign(tokens * d, 0.0);
  std::vector<double> h(de);
  for (const auto& [t, e] : out.kept) {
    const double* a = w1 + int64_t(e) * d * de;
    const double* b = w2 + int64_t(e) * de * d;
    for (int j = 0; j < de; ++j) {
      double v = 0;
      for (int i = 0; i < d; ++i) v += x[t * d + i] * a[i * de + j];
      h[j] = reference_activation(v, cfg.model.activation);
    }
    for (int i = 0; i < d; ++i) {
      double v = 0;
      for (int j = 0; j < de; ++j) v += h[j] * b[j * d + i];
      out.y[t * d + i] += p[t * ne + e] * v;
    }
  }
  return out;
}

}  // namespace finemoe::test
