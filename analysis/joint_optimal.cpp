#include "joint_optimal.h"

#include <cmath>
#include <sstream>

#include "util/check.h"

namespace finemoe::analysis {
namespace {

constexpr double kDModelPerBlock = 64;

double flops_per_token(const FlopsModel& flops, double n_blocks, double E, double G) {
  return E > 1 ? flops.flops_per_token(n_blocks, E, G) : flops.flops_per_token(n_blocks, 0, 1);
}

}  // namespace

double joint_total_params(double n_blocks, double E) {
  const double d = kDModelPerBlock * n_blocks;
  return d * d * (E > 1 ? 8 * E + 4 : 12) * n_blocks;
}

JointConfig joint_optimal_for(const JointLaw& law, double E, double G, double budget, const JointSearch& s) {
  JointConfig out;
  out.budget = budget;
  out.E = E;
  out.G = E > 1 ? G : 1;
  // Largest n_blocks within the budget (min_tokens tokens) and within the parameter cap.
  const auto fits_budget = [&](double n) { return flops_per_token(s.flops, n, E, out.G) * s.flops.min_tokens <= budget; };
  if (!fits_budget(1) || joint_total_params(1, E) > s.max_total_params) return out;
  double lo = 0, hi = std::log(1e7);
  for (int i = 0; i < 200; ++i) {
    const double mid = 0.5 * (lo + hi);
    (fits_budget(std::exp(mid)) ? lo : hi) = mid;
  }
  double ln_max = lo;
  bool capped = false;
  if (std::isfinite(s.max_total_params)) {
    const double ln_mem = std::log(std::cbrt(s.max_total_params / joint_total_params(1, E)));
    if (ln_mem < ln_max) ln_max = ln_mem, capped = true;
  }
  const auto loss_at = [&](double ln_n) {
    const double n = std::exp(ln_n), d = kDModelPerBlock * n;
    return law.predict(12 * d * d * n, budget / flops_per_token(s.flops, n, E, out.G), E, out.G);
  };
  const double ln_n = ln_max > 0 ? brent_minimize(loss_at, 0, ln_max, 1e-10) : 0;
  out.feasible = true;
  out.n_blocks = std::exp(ln_n);
  out.d_model = kDModelPerBlock * out.n_blocks;
  out.N_active = 12 * out.d_model * out.d_model * out.n_blocks;
  out.N_total = joint_total_params(out.n_blocks, E);
  out.D = budget / flops_per_token(s.flops, out.n_blocks, E, out.G);
  out.loss = loss_at(ln_n);
  out.memory_bound = capped && ln_max - ln_n < 1e-4;
  return out;
}

namespace {

JointConfig best_over(const JointLaw& law, double budget, const JointSearch& s, std::vector<JointConfig>* per_E) {
  JointConfig best;
  best.loss = std::numeric_limits<double>::infinity();
  for (double E : s.expansion_rates) {
    JointConfig best_e;
    best_e.loss = std::numeric_limits<double>::infinity();
    const std::vector<double> gs = (E > 1 && law.fine_grained) ? s.granularities : std::vector<double>{1};
    for (double G : gs) {
      const JointConfig c = joint_optimal_for(law, E, G, budget, s);
      if (c.feasible && c.loss < best_e.loss) best_e = c;
    }
    if (!best_e.feasible) continue;
    if (per_E) per_E->push_back(best_e);
    if (best_e.loss < best.loss) best = best_e;
  }
  return best;
}

}  // namespace

JointOptimalRow joint_optimal_row(const JointLaw& law, double budget, const JointSearch& s,
                                  const std::vector<JointLaw>& bootstrap) {
  JointOptimalRow row;
  row.best = best_over(law, budget, s, &row.per_E);
  if (!row.best.feasible) {
    std::ostringstream os;
    os << "budget " << budget << " FLOPs";
    if (std::isfinite(s.max_total_params)) os << " with at most " << s.max_total_params << " total parameters";
    os << " fits no model of the search (d_model = 64 n_blocks, n_blocks >= 1, at least " << s.flops.min_tokens
       << " tokens)";
    throw InputError(os.str());
  }
  if (!bootstrap.empty()) {
    std::vector<double> e, g, n, d, l;
    for (const JointLaw& k : bootstrap) {
      const JointConfig c = best_over(k, budget, s, nullptr);
      if (!c.feasible) continue;
      e.push_back(c.E), g.push_back(c.G), n.push_back(c.N_active), d.push_back(c.D), l.push_back(c.loss);
    }
    if (!e.empty()) {
      const auto band = [](const std::vector<double>& v) { return Band{percentile(v, 0.1), percentile(v, 0.9)}; };
      row.has_bands = true;
      row.E = band(e), row.G = band(g), row.N_active = band(n), row.D = band(d), row.loss = band(l);
    }
  }
  return row;
}

}  // namespace finemoe::analysis
