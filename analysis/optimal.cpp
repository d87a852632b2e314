#include "optimal.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>

#include "util/check.h"

namespace finemoe::analysis {
namespace {

constexpr double kDModelPerBlock = 64;  // the paper's shape rule d_model = 64 n_blocks

double total_params(double n_blocks, double E) {
  const double d = kDModelPerBlock * n_blocks;
  return d * d * (E > 0 ? 8 * E + 4 : 12) * n_blocks;
}

// Whether the budget trains a model of n_blocks blocks on at least min_tokens tokens.
bool feasible(const FlopsModel& flops, double E, double G, double budget, double n_blocks = 1) {
  return flops.flops_per_token(n_blocks, E, G) * flops.min_tokens <= budget;
}

}  // namespace

double FlopsModel::flops_per_token(double n_blocks, double E, double G) const {
  const double d = kDModelPerBlock * n_blocks;
  return (12 * d * d * c_f + d * E * G * c_r) * n_blocks;
}

std::vector<double> powers_of_two(double max_G) {
  std::vector<double> out;
  for (double g = 1; g <= max_G; g *= 2) out.push_back(g);
  return out;
}

double brent_minimize(const std::function<double(double)>& f, double lo, double hi, double tolerance) {
  // Brent (1973), "Algorithms for Minimization without Derivatives", procedure localmin.
  const double golden = 0.5 * (3.0 - std::sqrt(5.0));
  double a = lo, b = hi;
  double x = a + golden * (b - a), w = x, v = x;
  double fx = f(x), fw = fx, fv = fx;
  double d = 0, e = 0;
  for (int iter = 0; iter < 500; ++iter) {
    const double m = 0.5 * (a + b);
    const double tol = 1e-12 * std::abs(x) + tolerance;
    const double t2 = 2 * tol;
    if (std::abs(x - m) <= t2 - 0.5 * (b - a)) break;
    double p = 0, q = 0, r = 0;
    if (std::abs(e) > tol) {  // try a parabola through x, w, v
      r = (x - w) * (fx - fv);
      q = (x - v) * (fx - fw);
      p = (x - v) * q - (x - w) * r;
      q = 2 * (q - r);
      if (q > 0) p = -p;
      q = std::abs(q);
      r = e;
      e = d;
    }
    if (std::abs(p) < std::abs(0.5 * q * r) && p > q * (a - x) && p < q * (b - x)) {
      d = p / q;
      const double u = x + d;
      if (u - a < t2 || b - u < t2) d = x < m ? tol : -tol;
    } else {  // golden-section step
      e = (x < m ? b : a) - x;
      d = golden * e;
    }
    const double u = x + (std::abs(d) >= tol ? d : (d > 0 ? tol : -tol));
    const double fu = f(u);
    if (fu <= fx) {
      (u < x ? b : a) = x;
      v = w, fv = fw;
      w = x, fw = fx;
      x = u, fx = fu;
    } else {
      (u < x ? a : b) = u;
      if (fu <= fw || w == x) {
        v = w, fv = fw;
        w = u, fw = fu;
      } else if (fu <= fv || v == x || v == w) {
        v = u, fv = fu;
      }
    }
  }
  return x;
}

OptimalConfig optimal_for_granularity(const LawCoefficients& law, double E, double G, double budget,
                                      const FlopsModel& flops) {
  if (!feasible(flops, E, G, budget)) {
    std::ostringstream os;
    os << "budget " << budget << " FLOPs is too small for any model: the smallest (d_model = 64, n_blocks = 1"
       << (E > 0 ? ", G = " + std::to_string(int(G)) : std::string()) << ") needs "
       << flops.flops_per_token(1, E, G) * flops.min_tokens << " FLOPs to train on " << flops.min_tokens
       << " tokens (one batch)";
    throw InputError(os.str());
  }
  // Largest n_blocks that still sees min_tokens tokens: FLOPs per token grow with n_blocks.
  double lo = 0, hi = std::log(1e7);
  for (int i = 0; i < 200; ++i) {
    const double mid = 0.5 * (lo + hi);
    (feasible(flops, E, G, budget, std::exp(mid)) ? lo : hi) = mid;
  }
  const double ln_n_max = lo;
  const auto loss_at = [&](double ln_n) {
    const double n = std::exp(ln_n);
    return law.predict(total_params(n, E), budget / flops.flops_per_token(n, E, G), G);
  };
  const double ln_n = ln_n_max > 0 ? brent_minimize(loss_at, 0, ln_n_max, 1e-10) : 0;
  OptimalConfig out;
  out.budget = budget;
  out.G = E > 0 ? G : 0;
  out.n_blocks = std::exp(ln_n);
  out.d_model = kDModelPerBlock * out.n_blocks;
  out.N_active = 12 * out.d_model * out.d_model * out.n_blocks;
  out.N_total = total_params(out.n_blocks, E);
  out.D = budget / flops.flops_per_token(out.n_blocks, E, G);
  out.loss = loss_at(ln_n);
  return out;
}

OptimalConfig optimal_config(const LawCoefficients& law, double E, const std::vector<double>& granularities,
                             double budget, const FlopsModel& flops) {
  if (!law.moe) return optimal_for_granularity(law, 0, 1, budget, flops);
  FINEMOE_CHECK(!granularities.empty() && E > 0, "an MoE optimum needs E and granularities");
  OptimalConfig best;
  best.loss = std::numeric_limits<double>::infinity();
  for (double G : granularities) {
    if (!feasible(flops, E, G, budget)) continue;  // larger G only costs more router FLOPs
    const OptimalConfig c = optimal_for_granularity(law, E, G, budget, flops);
    if (c.loss < best.loss) best = c;
  }
  // No G fits the budget: this throws the InputError describing the cheapest model's shortfall.
  if (!std::isfinite(best.loss)) {
    return optimal_for_granularity(law, E, *std::min_element(granularities.begin(), granularities.end()),
                                   budget, flops);
  }
  return best;
}

OptimalRow optimal_row(const LawCoefficients& law, double E, const std::vector<double>& granularities,
                       double budget, const FlopsModel& flops, const std::vector<LawCoefficients>& bootstrap) {
  OptimalRow row;
  row.best = optimal_config(law, E, granularities, budget, flops);
  if (law.moe) {
    for (double G : granularities) {
      if (feasible(flops, E, G, budget)) row.per_G.push_back(optimal_for_granularity(law, E, G, budget, flops));
    }
  }
  if (!bootstrap.empty()) {
    std::vector<double> n_active, tokens, granularity, loss;
    for (const auto& k : bootstrap) {
      const OptimalConfig c = optimal_config(k, E, granularities, budget, flops);
      n_active.push_back(c.N_active);
      tokens.push_back(c.D);
      granularity.push_back(c.G);
      loss.push_back(c.loss);
    }
    const auto band = [](const std::vector<double>& v) { return Band{percentile(v, 0.1), percentile(v, 0.9)}; };
    row.has_bands = true;
    row.N_active = band(n_active);
    row.D = band(tokens);
    row.G = band(granularity);
    row.loss = band(loss);
  }
  return row;
}

CompareRow compare_row(const LawCoefficients& moe_law, const LawCoefficients& dense_law, double E,
                       const std::vector<double>& granularities, double budget, const FlopsModel& flops) {
  CompareRow row;
  row.budget = budget;
  row.moe = optimal_config(moe_law, E, granularities, budget, flops);
  row.dense = optimal_config(dense_law, 0, granularities, budget, flops);
  row.dense_equivalent_flops = dense_compute_for_loss(dense_law, row.moe.loss, flops);
  row.multiplier = row.dense_equivalent_flops / budget;
  return row;
}

double dense_compute_for_loss(const LawCoefficients& dense, double loss, const FlopsModel& flops) {
  FINEMOE_CHECK(!dense.moe, "dense_compute_for_loss takes a dense law");
  if (loss <= dense.c) return std::numeric_limits<double>::infinity();
  const auto best_loss = [&](double ln_budget) {
    return optimal_for_granularity(dense, 0, 1, std::exp(ln_budget), flops).loss;
  };
  // The smallest budget any dense model fits in (nudged up so exp(log(x)) cannot fall below it).
  double lo = std::log(flops.flops_per_token(1, 0, 1) * flops.min_tokens) + 1e-9;
  if (best_loss(lo) <= loss) return std::exp(lo);
  double hi = lo;
  do {
    hi += std::log(10.0);
    if (hi > std::log(1e60)) return std::numeric_limits<double>::infinity();
  } while (best_loss(hi) > loss);
  for (int i = 0; i < 200 && hi - lo > 1e-13; ++i) {
    const double mid = 0.5 * (lo + hi);
    (best_loss(mid) > loss ? lo : hi) = mid;
  }
  return std::exp(0.5 * (lo + hi));
}

}  // namespace finemoe::analysis
