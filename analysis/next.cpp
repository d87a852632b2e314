#include "next.h"

#include <Eigen/Dense>

#include <algorithm>
#include <cmath>
#include <limits>

#include "util/check.h"

namespace finemoe::analysis {
namespace {

double total_params(double d, double n_blocks, double E) { return d * d * (8 * E + 4) * n_blocks; }

Eigen::VectorXd to_eigen(const std::vector<double>& v) { return Eigen::Map<const Eigen::VectorXd>(v.data(), Eigen::Index(v.size())); }

double step_of(double v) { return 1e-5 * std::max(std::abs(v), 1e-2); }

// Central-difference gradient of a function of the law's coefficients.
std::vector<double> gradient(const LawCoefficients& law, const std::function<double(const LawCoefficients&)>& f) {
  const std::vector<double> v = law.values();
  std::vector<double> g(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) {
    std::vector<double> up = v, down = v;
    const double h = step_of(v[i]);
    up[i] += h;
    down[i] -= h;
    g[i] = (f(LawCoefficients::from_values(law.moe, up)) - f(LawCoefficients::from_values(law.moe, down))) / (2 * h);
  }
  return g;
}

double optimal_loss(const LawCoefficients& law, double E, double budget, double max_g, const FlopsModel& flops) {
  const double u = continuous_log2_optimal_G(law, E, budget, max_g, flops);
  return optimal_for_granularity(law, E, std::exp2(u), budget, flops).loss;
}

}  // namespace

double continuous_log2_optimal_G(const LawCoefficients& law, double E, double budget, double max_g,
                                 const FlopsModel& flops) {
  const auto loss_at = [&](double u) { return optimal_for_granularity(law, E, std::exp2(u), budget, flops).loss; };
  return brent_minimize(loss_at, 0, std::log2(max_g), 1e-7);
}

double candidate_flops(const NextCandidate& c, double E, const FlopsModel& flops) {
  return (12 * c.d_model * c.d_model * flops.c_f + c.d_model * E * c.G * flops.c_r) * c.n_blocks * c.D;
}

std::vector<double> law_gradient_row(const LawCoefficients& law, double N, double D, double G) {
  return gradient(law, [&](const LawCoefficients& k) { return k.predict(N, D, G); });
}

NextProposal propose_next_runs(const LawCoefficients& law, double E, const std::vector<Run>& runs, double rmse,
                               const NextOptions& o, const std::function<double(const NextCandidate&)>& cost) {
  FINEMOE_CHECK(law.moe && E > 0, "next needs a MoE law and its E");
  if (!(o.budget > 0 && o.target > 0)) throw InputError("next: --budget and --target must be positive");
  const std::vector<double> theta = law.values();
  const Eigen::Index p = Eigen::Index(theta.size());
  const double s2 = std::pow(std::max(rmse, 1e-4), 2);
  Eigen::MatrixXd info = Eigen::MatrixXd::Zero(p, p);
  for (const Run& r : runs) {
    const Eigen::VectorXd j = to_eigen(law_gradient_row(law, r.N, r.D, r.G));
    info += j * j.transpose() / s2;
  }
  for (Eigen::Index i = 0; i < p; ++i) info(i, i) += 1 / std::pow(o.prior_scale * (std::abs(theta[std::size_t(i)]) + 0.1), 2);
  Eigen::MatrixXd sigma = info.ldlt().solve(Eigen::MatrixXd::Identity(p, p));

  NextProposal out;
  out.log2_G_star = continuous_log2_optimal_G(law, E, o.target, o.max_g, o.flops);
  out.loss_star = optimal_loss(law, E, o.target, o.max_g, o.flops);
  const Eigen::VectorXd g = to_eigen(gradient(law, [&](const LawCoefficients& k) {
    return continuous_log2_optimal_G(k, E, o.target, o.max_g, o.flops);
  }));
  const Eigen::VectorXd h = to_eigen(gradient(law, [&](const LawCoefficients& k) {
    return optimal_loss(k, E, o.target, o.max_g, o.flops);
  }));
  const double var_g0 = std::max(g.dot(sigma * g), 1e-30), var_h0 = std::max(h.dot(sigma * h), 1e-30);
  out.sd_log2_G_before = std::sqrt(var_g0);
  out.sd_loss_before = std::sqrt(var_h0);

  // The candidate pool: n_blocks x G x D, within the budget.
  std::vector<double> tokens = o.token_grid;
  if (tokens.empty())
    for (double t = 0.125e9; t <= 128.1e9; t *= 2) tokens.push_back(t);
  std::vector<NextCandidate> pool;
  std::vector<Eigen::VectorXd> rows;
  for (double nb : o.n_blocks_grid) {
    const double d = o.d_per_block * nb;
    for (double G = 1; G <= o.max_g; G *= 2) {
      if (4 * d / G < 16 || std::fmod(4 * d, G) != 0) continue;  // experts narrower than 16, or not whole
      for (double D : tokens) {
        NextCandidate c{nb, G, D, d, 0, 0};
        c.cost = cost(c);
        if (!(c.cost > 0) || c.cost > o.budget) continue;
        pool.push_back(c);
        rows.push_back(to_eigen(law_gradient_row(law, total_params(d, nb, E), D, G)));
      }
    }
  }
  std::vector<bool> taken(pool.size(), false);
  double left = o.budget;
  const double overhead = o.overhead_fraction * o.budget / std::max(1, o.max_runs);
  while (int(out.runs.size()) < o.max_runs) {
    double best_rate = 0;
    std::size_t best = pool.size();
    for (std::size_t i = 0; i < pool.size(); ++i) {
      if (taken[i] || pool[i].cost > left) continue;
      const Eigen::VectorXd sj = sigma * rows[i];
      const double gain =
          (std::pow(g.dot(sj), 2) / var_g0 + o.loss_weight * std::pow(h.dot(sj), 2) / var_h0) / (s2 + rows[i].dot(sj));
      const double rate = gain / (pool[i].cost + overhead);
      if (rate > best_rate) best_rate = rate, best = i;
    }
    if (best == pool.size()) break;
    const Eigen::VectorXd sj = sigma * rows[best];
    const double denom = s2 + rows[best].dot(sj);
    pool[best].gain = (std::pow(g.dot(sj), 2) / var_g0 + o.loss_weight * std::pow(h.dot(sj), 2) / var_h0) / denom;
    sigma -= sj * sj.transpose() / denom;
    taken[best] = true;
    left -= pool[best].cost;
    out.spent += pool[best].cost;
    out.runs.push_back(pool[best]);
  }
  out.sd_log2_G_after = std::sqrt(std::max(g.dot(sigma * g), 0.0));
  out.sd_loss_after = std::sqrt(std::max(h.dot(sigma * h), 0.0));
  return out;
}

}  // namespace finemoe::analysis
