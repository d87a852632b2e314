#include "joint_fit.h"

#include <ceres/ceres.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <limits>
#include <set>
#include <sstream>

#include "lm_solve.h"
#include "util/check.h"
#include "util/rng.h"

namespace finemoe::analysis {
namespace {

// p = (ln a, delta, alpha, gamma, ln b, omega, beta, zeta, ln g, kappa, c): every term an exp() of
// a function linear in the exponents, a, b, g positive without bounds; c linear with a lower bound.
constexpr int kParams = 11, kLnG = 8, kKappa = 9, kC = 10;
using Params = std::array<double, kParams>;

double value_of(double x) { return x; }
template <typename T, int N>
T value_of(const ceres::Jet<T, N>& x) {
  return x.a;
}

struct JointResidual {
  double ln_N, ln_D, ln_E_hat, ln_G, loss;
  bool fine_grained, log_space;

  template <typename T>
  bool operator()(const T* p, T* residual) const {
    const T n_exponent = p[2] + p[3] * ln_E_hat;
    const T n_scale = exp(p[1] * ln_E_hat + n_exponent * ln_N);
    T prefactor = exp(p[0]);
    if (fine_grained) prefactor += exp(p[kLnG] - p[kKappa] * ln_G);
    const T d_term = exp(p[4] + p[5] * ln_E_hat + (p[6] + p[7] * ln_E_hat) * ln_D);
    const T predicted = prefactor * n_scale + d_term + p[kC];
    if (!(value_of(predicted) < 1e30) || (log_space && !(value_of(predicted) > 0))) return false;
    residual[0] = log_space ? log(predicted) - std::log(loss) : predicted - loss;
    return true;
  }
};

struct Solution {
  Params p{};
  double cost = std::numeric_limits<double>::infinity();
  FitDiagnostics diagnostics;
};

JointLaw to_law(const Params& p, const JointFitOptions& o) {
  std::vector<double> v = {std::exp(p[0]), p[1], p[2], p[3], std::exp(p[4]), p[5], p[6], p[7]};
  if (o.fine_grained) v.push_back(std::exp(p[kLnG])), v.push_back(p[kKappa]);
  v.push_back(p[kC]);
  return JointLaw::from_values(o.fine_grained, v, o.transform);
}

Solution solve(const std::vector<const JointRun*>& runs, const JointFitOptions& o, const Params& start) {
  Solution s;
  s.p = start;
  if (std::isfinite(o.c_min)) s.p[kC] = std::max(s.p[kC], o.c_min);
  const bool log_space = o.preset == FitPreset::chinchilla;
  ceres::Problem problem;
  ceres::LossFunction* robust = new ceres::HuberLoss(log_space ? 1e-3 : 0.1);
  for (const JointRun* r : runs) {
    problem.AddResidualBlock(new ceres::AutoDiffCostFunction<JointResidual, 1, kParams>(new JointResidual{
                                 std::log(r->N_active), std::log(r->D), std::log(o.transform(r->E)), std::log(r->G),
                                 r->loss, o.fine_grained, log_space}),
                             robust, s.p.data());
  }
  if (!o.fine_grained) problem.SetManifold(s.p.data(), new ceres::SubsetManifold(kParams, {kLnG, kKappa}));
  if (std::isfinite(o.c_min)) problem.SetParameterLowerBound(s.p.data(), kC, o.c_min);
  const ceres::Solver::Summary summary = solve_lm(problem, {1000, 1e-16, 1e-16, 1e-14});
  const bool finite = std::all_of(s.p.begin(), s.p.end(), [](double v) { return std::isfinite(v); });
  if (summary.IsSolutionUsable() && finite && std::isfinite(summary.final_cost)) s.cost = summary.final_cost;
  s.diagnostics.optimizer = "LM";
  s.diagnostics.termination =
      std::string(ceres::TerminationTypeToString(summary.termination_type)) + ": " + summary.message;
  s.diagnostics.converged = summary.termination_type == ceres::CONVERGENCE;
  s.diagnostics.cost = s.cost;
  return s;
}

// 2^5 starts over the magnitudes of a, alpha, b, beta, c (published fits), the E terms at 0 (the
// E-independent law), g = 1, kappa = 0.5.
std::vector<Params> start_grid() {
  std::vector<Params> grid;
  for (double a : {5.0, 30.0})
    for (double alpha : {-0.1, -0.3})
      for (double b : {10.0, 100.0})
        for (double beta : {-0.1, -0.3})
          for (double c : {0.3, 1.5})
            grid.push_back({std::log(a), 0, alpha, 0, std::log(b), 0, beta, 0, 0, 0.5, c});
  return grid;
}

Solution best_of(const std::vector<const JointRun*>& runs, const JointFitOptions& o, const std::vector<Params>& starts,
                 bool parallel) {
  std::vector<Solution> solutions(starts.size());
  const int n = int(starts.size());
  const int threads = o.threads > 0 ? o.threads : 0;
#pragma omp parallel for schedule(dynamic) num_threads(threads) if (parallel && threads != 1)
  for (int i = 0; i < n; ++i) solutions[std::size_t(i)] = solve(runs, o, starts[std::size_t(i)]);
  Solution best;
  for (const Solution& s : solutions)
    if (s.cost < best.cost) best = s;
  return best;
}

std::string fmt(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3g", v);
  return buf;
}

std::vector<IdentifiabilityFlag> joint_flags(const JointFitResult& fit, const JointFitOptions& o) {
  std::vector<IdentifiabilityFlag> flags;
  const auto names = fit.law.names();
  const auto values = fit.law.values();
  if (std::isfinite(o.c_min) && fit.law.c <= o.c_min + 1e-9) {
    flags.push_back({"at_bound", "c", "c = " + fmt(fit.law.c) + " sits on its lower bound",
                     "wider D: token budgets over a factor of 30-100"});
  }
  const auto remedy = [](const std::string& n) -> std::string {
    if (n == "delta" || n == "gamma" || n == "omega" || n == "zeta") return "more E: further expansion rates, each at several N and D";
    if (n == "g" || n == "kappa") return "more G: at least three granularities at several N";
    if (n == "a" || n == "alpha") return "wider N: a factor of 10 or more in N, each at several D";
    return "wider D: token budgets over a factor of 30-100";
  };
  for (std::size_t i = 0; i < fit.bands.size(); ++i) {
    const Band& b = fit.bands[i];
    const std::string band = "[" + fmt(b.p10) + ", " + fmt(b.p90) + "]";
    const bool positive = names[i] == "a" || names[i] == "b" || names[i] == "g" || names[i] == "c";
    if (b.p90 - b.p10 <= 1e-9 * (1 + std::abs(values[i])) && fit.rmse > 1e-9) {
      flags.push_back({"degenerate_band", names[i], "bootstrap band " + band + " has no width", remedy(names[i])});
    } else if (positive && (!(b.p10 > 0) || b.p90 / b.p10 > 10)) {
      flags.push_back({"wide_band", names[i], "bootstrap band " + band + " spans an order of magnitude or reaches 0",
                       remedy(names[i])});
    } else if (!positive && b.p10 < 0 && b.p90 > 0) {
      flags.push_back({"wide_band", names[i], "bootstrap band " + band + " holds both signs", remedy(names[i])});
    }
  }
  if (o.fine_grained && fit.distinct_G < 3) {
    flags.push_back({"vanishing_term", "g/G^kappa",
                     std::to_string(fit.distinct_G) + " distinct G: a, g and kappa cannot be told apart",
                     remedy("g")});
  }
  return flags;
}

}  // namespace

std::vector<JointRun> joint_runs(const RunSet& set) {
  std::vector<JointRun> out;
  for (const auto* group : {&set.moe, &set.dense}) {
    for (const Run& r : *group) {
      JointRun j;
      j.path = r.path;
      const double d = double(r.d_model);
      j.N_active = 12 * d * d * double(r.n_blocks);
      j.D = r.D;
      j.E = r.moe ? double(r.E) : 1;
      j.G = r.moe ? r.G : 1;
      j.loss = r.loss;
      out.push_back(j);
    }
  }
  return out;
}

JointFitResult fit_joint_law(const std::vector<JointRun>& runs, const JointFitOptions& o) {
  const std::size_t n_coef = o.fine_grained ? 11 : 9;
  if (runs.size() < n_coef) {
    throw InputError("the joint fit has " + std::to_string(runs.size()) + " completed runs and " +
                     std::to_string(n_coef) + " coefficients; it needs at least as many runs as coefficients");
  }
  std::set<double> es, gs;
  for (const JointRun& r : runs) {
    if (!(r.N_active > 0 && r.D > 0 && r.E >= 1 && r.G > 0 && std::isfinite(r.loss) && r.loss > 0)) {
      std::ostringstream os;
      os << r.path << ": N_active = " << r.N_active << ", D = " << r.D << ", E = " << r.E << ", G = " << r.G
         << ", loss = " << r.loss << ": the joint fit needs positive N, D, G and loss and E >= 1";
      throw InputError(os.str());
    }
    es.insert(r.E);
    gs.insert(r.G);
  }
  if (es.size() < 2) {
    throw InputError("the joint law needs records of at least two expansion rates E (dense records count as E = 1); "
                     "these all have E = " + fmt(*es.begin()) + " (first: " + runs[0].path + ")");
  }
  std::vector<const JointRun*> all;
  for (const JointRun& r : runs) all.push_back(&r);
  const std::vector<Params> grid = start_grid();
  const Solution best = best_of(all, o, grid, true);
  if (!std::isfinite(best.cost)) throw RuntimeFailure("no start of the joint fit converged");

  JointFitResult result;
  result.law = to_law(best.p, o);
  result.n_runs = runs.size();
  result.diagnostics = best.diagnostics;
  result.distinct_E = int(es.size());
  result.distinct_G = int(gs.size());
  double sq = 0;
  for (const JointRun& r : runs) {
    result.predicted.push_back(result.law.predict(r.N_active, r.D, r.E, r.G));
    sq += std::pow(result.predicted.back() - r.loss, 2);
  }
  result.rmse = std::sqrt(sq / double(runs.size()));

  if (o.bootstrap > 0) {
    // Each resample refitted from the full fit's solution and two starts spread over the grid.
    const std::vector<Params> starts = {best.p, grid[grid.size() / 4], grid[3 * grid.size() / 4]};
    const std::size_t m =
        std::max<std::size_t>(n_coef, std::size_t(std::lround(o.bootstrap_fraction * double(runs.size()))));
    const uint64_t key = hash_combine(o.seed, hash_string("joint-bootstrap"));
    std::vector<Solution> samples(std::size_t(o.bootstrap));
    const int threads = o.threads > 0 ? o.threads : 0;
#pragma omp parallel for schedule(dynamic) num_threads(threads) if (threads != 1)
    for (int b = 0; b < o.bootstrap; ++b) {
      std::vector<const JointRun*> sample;
      for (std::size_t i = 0; i < m; ++i) {
        const double u = uniform_open(hash_combine(key, uint64_t(b)), i);
        sample.push_back(all[std::min(runs.size() - 1, std::size_t(u * double(runs.size())))]);
      }
      samples[std::size_t(b)] = best_of(sample, o, starts, false);
    }
    for (const Solution& s : samples)
      if (std::isfinite(s.cost)) result.bootstrap.push_back(to_law(s.p, o));
    if (!result.bootstrap.empty()) {
      for (std::size_t c = 0; c < n_coef; ++c) {
        std::vector<double> v;
        for (const JointLaw& k : result.bootstrap) v.push_back(k.values()[c]);
        result.bands.push_back({percentile(v, 0.1), percentile(v, 0.9)});
      }
    }
  }
  result.flags = joint_flags(result, o);
  return result;
}

}  // namespace finemoe::analysis
