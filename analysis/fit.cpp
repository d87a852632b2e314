#include "fit.h"

#include <ceres/ceres.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <limits>
#include <numeric>
#include <sstream>

#include "lm_solve.h"
#include "util/check.h"
#include "util/rng.h"

namespace finemoe::analysis {
namespace {

// The solver works on p = (ln a, alpha, ln b, beta, ln g, gamma, c): positive a, b, g without
// bounds, every term of the law an exp() of a linear function of p. c stays linear with a lower
// bound of 0: in log space a fit that drives c towards 0 would lose its gradient there, and
// bootstrap fits started from it could never bring c back.
using Params = std::array<double, 7>;
constexpr int kLnG = 4, kGamma = 5, kC = 6;
// c within this of c_min counts as on its bound.
constexpr double kOnBound = 1e-12;

double value_of(double x) { return x; }
template <typename T, int N>
T value_of(const ceres::Jet<T, N>& x) {
  return x.a;
}

struct LawResidual {
  double ln_N, ln_D, ln_G, loss;
  bool moe, log_space;

  template <typename T>
  bool operator()(const T* p, T* residual) const {
    T param_term = exp(p[0] - p[1] * ln_N);
    if (moe) param_term += exp(p[kLnG] - p[kGamma] * ln_G - p[1] * ln_N);
    const T predicted = p[6] + param_term + exp(p[2] - p[3] * ln_D);
    // A trial step far outside the law's range overflows: report it as a failed evaluation,
    // which makes the solver shrink the step.
    if (!(value_of(predicted) < 1e30) || (log_space && !(value_of(predicted) > 0))) return false;  // also false for NaN
    residual[0] = log_space ? log(predicted) - std::log(loss) : predicted - loss;
    return true;
  }
};

struct Solution {
  Params p{};
  double cost = std::numeric_limits<double>::infinity();
  FitDiagnostics diagnostics;
};

// weight_decay * |p|^2 as seven residuals sqrt(2 weight_decay) p_i (Ceres sums half squares).
struct Penalty {
  double w;
  template <typename T>
  bool operator()(const T* p, T* residual) const {
    for (int i = 0; i < 7; ++i) residual[i] = w * p[i];
    return true;
  }
};

// The objective of docs/analysis.md, 1/2 sum_i huber(r_i^2) + weight_decay |p|^2, on p. Frozen
// coefficients (g, gamma of a dense law; c while it is held at its bound) stay constant.
void add_objective(ceres::Problem& problem, const std::vector<const Run*>& runs, bool moe, const FitOptions& o,
                   Params& p, bool hold_c) {
  const bool log_space = o.preset == FitPreset::chinchilla;
  ceres::LossFunction* robust = new ceres::HuberLoss(log_space ? 1e-3 : 0.1);
  for (const Run* r : runs) {
    auto* cost = new ceres::AutoDiffCostFunction<LawResidual, 1, 7>(
        new LawResidual{std::log(r->N), std::log(r->D), std::log(r->G), r->loss, moe, log_space});
    problem.AddResidualBlock(cost, robust, p.data());
  }
  if (o.weight_decay > 0) {
    problem.AddResidualBlock(new ceres::AutoDiffCostFunction<Penalty, 7, 7>(new Penalty{std::sqrt(2 * o.weight_decay)}),
                             nullptr, p.data());
  }
  std::vector<int> frozen;
  if (!moe) frozen = {kLnG, kGamma};
  if (hold_c) frozen.push_back(kC);
  if (!frozen.empty()) problem.SetManifold(p.data(), new ceres::SubsetManifold(7, frozen));
}

// The cost and its gradient in p at p (g, gamma excluded for dense laws), without bounds.
double cost_and_gradient(const std::vector<const Run*>& runs, bool moe, const FitOptions& o, Params p,
                         std::vector<double>* gradient) {
  ceres::Problem problem;
  add_objective(problem, runs, moe, o, p, false);
  double cost = 0;
  if (!problem.Evaluate(ceres::Problem::EvaluateOptions(), &cost, nullptr, gradient, nullptr)) {
    return std::numeric_limits<double>::infinity();
  }
  return cost;
}

// Largest |component| of the gradient after projection on the bounds: a component that pushes
// c below c_min while c sits on c_min is zero (the KKT condition there is dcost/dc >= 0).
double projected_gradient(const std::vector<const Run*>& runs, bool moe, const FitOptions& o, const Params& p) {
  std::vector<double> g;
  if (!std::isfinite(cost_and_gradient(runs, moe, o, p, &g))) return std::numeric_limits<double>::infinity();
  const bool c_on_bound = std::isfinite(o.c_min) && p[kC] <= o.c_min + kOnBound;
  double worst = 0;
  for (std::size_t i = 0; i < g.size(); ++i) {
    const bool is_c = i + 1 == g.size();
    if (is_c && c_on_bound && g[i] > 0) continue;
    worst = std::max(worst, std::abs(g[i]));
  }
  return worst;
}

// Levenberg-Marquardt with an active set for the one bound, c >= c_min. Ceres enforces a bound
// by clipping each trial point onto it; while c presses on c_min the clipped step is not the
// step the model predicted, every step gains about a tenth of the predicted decrease, the trust
// region shrinks by a third per iteration and the solve ends on "parameter tolerance" with the
// slope in the other coefficients still large (docs/analysis.md, "Why the fit used to stop
// early"). So when c ends on its bound, the fit is solved again with c held there (the bound
// is then inactive for the solver), and released when the slope says c would rise.
Solution solve(const std::vector<const Run*>& runs, bool moe, const FitOptions& o, const Params& start) {
  Solution s;
  s.p = start;
  const bool bounded = std::isfinite(o.c_min);
  if (bounded) s.p[kC] = std::max(s.p[kC], o.c_min);
  bool hold_c = false;
  ceres::Solver::Summary summary;
  std::string stages;
  for (int round = 0; round < 4; ++round) {
    ceres::Problem problem;
    add_objective(problem, runs, moe, o, s.p, hold_c);
    if (bounded && !hold_c) problem.SetParameterLowerBound(s.p.data(), kC, o.c_min);
    summary = solve_lm(problem);
    stages += std::string(stages.empty() ? "" : ", then ") + (hold_c ? "LM with c held at c_min" : "LM");
    if (!summary.IsSolutionUsable()) break;
    if (!bounded) break;
    std::vector<double> g;
    const double cost = cost_and_gradient(runs, moe, o, s.p, &g);
    if (!std::isfinite(cost)) break;
    const bool on_bound = s.p[kC] <= o.c_min + kOnBound;
    if (on_bound && !hold_c) {
      s.p[kC] = o.c_min;
      hold_c = true;  // solve the face c = c_min
    } else if (hold_c && g.back() < 0) {
      hold_c = false;  // c wants to rise off its bound: free it again
    } else {
      break;
    }
  }
  const bool finite = std::all_of(s.p.begin(), s.p.end(), [](double v) { return std::isfinite(v); });
  if (summary.IsSolutionUsable() && finite && std::isfinite(summary.final_cost)) {
    s.cost = cost_and_gradient(runs, moe, o, s.p, nullptr);
  }
  s.diagnostics.optimizer = stages;
  s.diagnostics.termination =
      std::string(ceres::TerminationTypeToString(summary.termination_type)) + ": " + summary.message;
  s.diagnostics.converged = summary.termination_type == ceres::CONVERGENCE;
  s.diagnostics.cost = s.cost;
  s.diagnostics.projected_gradient = finite ? projected_gradient(runs, moe, o, s.p) : s.cost;
  return s;
}

LawCoefficients to_coefficients(const Params& p, bool moe) {
  LawCoefficients k;
  k.moe = moe;
  k.a = std::exp(p[0]);
  k.alpha = p[1];
  k.b = std::exp(p[2]);
  k.beta = p[3];
  if (moe) {
    k.g = std::exp(p[kLnG]);
    k.gamma = p[kGamma];
  }
  k.c = p[6];
  return k;
}

// Starting points: every combination of `levels` values per coefficient (2 or 3), spanning the
// magnitudes published fits have (paper-facts.md and Hoffmann et al.).
std::vector<Params> start_grid(bool moe, int levels) {
  const bool wide = levels >= 3;
  const auto pick = [wide](std::vector<double> two, std::vector<double> three) { return wide ? three : two; };
  const std::vector<double> as = pick({5, 30}, {3, 15, 60}), alphas = pick({0.1, 0.3}, {0.05, 0.15, 0.4});
  const std::vector<double> bs = pick({10, 100}, {5, 40, 300}), betas = pick({0.1, 0.3}, {0.05, 0.15, 0.4});
  const std::vector<double> gs = moe ? pick({1, 5}, {0.5, 2, 10}) : std::vector<double>{1};
  const std::vector<double> gammas = moe ? pick({0.3, 1}, {0.2, 0.6, 1.2}) : std::vector<double>{0};
  const std::vector<double> cs = pick({0.3, 1.5}, {0.1, 0.8, 2});
  std::vector<Params> grid;
  for (double a : as)
    for (double alpha : alphas)
      for (double b : bs)
        for (double beta : betas)
          for (double g : gs)
            for (double gamma : gammas)
              for (double c : cs) grid.push_back({std::log(a), alpha, std::log(b), beta, std::log(g), gamma, c});
  return grid;
}

int thread_count(const FitOptions& o) { return o.threads > 0 ? o.threads : 0; }

// The solutions from the given starts (solved in parallel), best first, without near duplicates.
std::vector<Solution> local_minima(const std::vector<const Run*>& runs, bool moe, const FitOptions& o,
                                   const std::vector<Params>& starts) {
  std::vector<Solution> solutions(starts.size());
  const int n = int(starts.size());
  const int threads = thread_count(o);
#pragma omp parallel for schedule(dynamic) num_threads(threads) if (threads != 1)
  for (int i = 0; i < n; ++i) solutions[i] = solve(runs, moe, o, starts[i]);
  std::stable_sort(solutions.begin(), solutions.end(),
                   [](const Solution& x, const Solution& y) { return x.cost < y.cost; });
  std::vector<Solution> distinct;
  for (const Solution& s : solutions) {
    if (!std::isfinite(s.cost)) break;
    const bool seen = std::any_of(distinct.begin(), distinct.end(), [&s](const Solution& d) {
      for (std::size_t i = 0; i < s.p.size(); ++i) {
        if (std::abs(s.p[i] - d.p[i]) > 1e-3 * (1 + std::abs(d.p[i]))) return false;
      }
      return true;
    });
    if (!seen) distinct.push_back(s);
  }
  return distinct;
}

Solution best_of(const std::vector<const Run*>& runs, bool moe, const FitOptions& o,
                 const std::vector<Params>& starts) {
  const std::vector<Solution> minima = local_minima(runs, moe, o, starts);
  return minima.empty() ? Solution{} : minima.front();
}

// Fits a subset of the runs from each of the given starts (serially); the best.
Solution refit(const std::vector<const Run*>& runs, bool moe, const FitOptions& o, const std::vector<Params>& starts) {
  Solution best;
  for (const Params& p : starts) {
    const Solution s = solve(runs, moe, o, p);
    if (s.cost < best.cost) best = s;
  }
  if (!std::isfinite(best.cost)) {
    best.diagnostics.termination = "no start gave a usable solution";
    best.diagnostics.cost = best.diagnostics.projected_gradient = best.cost;
  }
  return best;
}

// The one-sided upper limit of c when c sits on its bound in the resamples (their percentile band
// is then [c_min, c_min]): the largest v whose profile cost, min over the other coefficients with
// c >= v, exceeds the bounded optimum's by at most z^2 s^2 / 2, z = 1.2816 (the 90th percentile,
// the band's upper end) and s^2 = 2 cost / (n - p) the residual variance (cost = sum r^2 / 2 while
// the residuals are inside the Huber delta). A likelihood-ratio bound: docs/analysis.md.
double profile_upper_limit_of_c(const std::vector<const Run*>& runs, bool moe, const FitOptions& o,
                                const Solution& bounded_best, std::size_t n_coefficients) {
  const double dof = double(runs.size()) - double(n_coefficients);
  if (!(dof > 0) || !std::isfinite(bounded_best.cost)) return o.c_min;
  const double threshold = 0.5 * 1.2816 * 1.2816 * (2 * bounded_best.cost / dof);
  const auto excess_at = [&](double v) {
    FitOptions at = o;
    at.c_min = v;
    Params start = bounded_best.p;
    start[kC] = v;
    return solve(runs, moe, at, start).cost - bounded_best.cost;
  };
  double lowest_loss = INFINITY;
  for (const Run* r : runs) lowest_loss = std::min(lowest_loss, r->loss);
  double lo = o.c_min, step = 0.01 * std::max(1e-3, lowest_loss - o.c_min), hi = lo + step;
  while (hi < lowest_loss && !(excess_at(hi) > threshold)) {
    lo = hi;
    step *= 2;
    hi = std::min(lowest_loss, lo + step);
  }
  if (hi >= lowest_loss && !(excess_at(hi) > threshold)) return lowest_loss;  // no upper limit below every loss
  for (int i = 0; i < 40 && hi - lo > 1e-6 * (1 + std::abs(hi)); ++i) {
    const double mid = 0.5 * (lo + hi);
    (excess_at(mid) > threshold ? hi : lo) = mid;
  }
  return lo;
}

double rmse_of(const std::vector<double>& predicted, const std::vector<double>& observed) {
  double sum = 0;
  for (std::size_t i = 0; i < predicted.size(); ++i) sum += std::pow(predicted[i] - observed[i], 2);
  return std::sqrt(sum / double(predicted.size()));
}

std::string describe(const Run& r) {
  std::ostringstream os;
  os << r.path << " (" << (r.moe ? "MoE, E=" + std::to_string(r.E) : std::string("dense")) << ")";
  return os.str();
}

void validate(const std::vector<Run>& runs, bool moe, std::size_t n_coefficients) {
  if (runs.size() < n_coefficients) {
    std::ostringstream os;
    os << "the " << (moe ? "MoE" : "dense") << " fit has " << runs.size() << " completed run"
       << (runs.size() == 1 ? "" : "s") << " and " << n_coefficients
       << " coefficients to fit; it needs at least as many runs as coefficients";
    throw InputError(os.str());
  }
  for (const Run& r : runs) {
    if (r.moe != moe) {
      throw InputError("one fit mixes MoE and dense records: " + describe(runs[0]) + " and " + describe(r));
    }
    if (r.E != runs[0].E) {
      throw InputError("records with different E in one fit: " + describe(runs[0]) + " and " + describe(r) +
                       "; fit each expansion rate separately");
    }
    if (!(std::isfinite(r.loss) && r.loss > 0)) {
      std::ostringstream os;
      os << r.path << ": loss " << r.loss << " is not a positive finite number";
      throw InputError(os.str());
    }
    if (!(r.N > 0 && r.D > 0 && r.G > 0)) {
      std::ostringstream os;
      os << r.path << ": N = " << r.N << ", D = " << r.D << ", G = " << r.G << " must all be positive";
      throw InputError(os.str());
    }
  }
}

std::vector<double> predict_all(const LawCoefficients& k, const std::vector<const Run*>& runs) {
  std::vector<double> out;
  for (const Run* r : runs) out.push_back(k.predict(r->N, r->D, r->G));
  return out;
}

std::vector<double> losses_of(const std::vector<const Run*>& runs) {
  std::vector<double> out;
  for (const Run* r : runs) out.push_back(r->loss);
  return out;
}

}  // namespace

FitPreset parse_fit_preset(const std::string& text) {
  if (text == "paper") return FitPreset::paper;
  if (text == "chinchilla") return FitPreset::chinchilla;
  throw InputError("--preset: '" + text + "' is not paper or chinchilla");
}

std::string to_string(FitPreset preset) { return preset == FitPreset::paper ? "paper" : "chinchilla"; }

double percentile(std::vector<double> values, double q) {
  FINEMOE_CHECK(!values.empty(), "percentile of nothing");
  std::sort(values.begin(), values.end());
  const double pos = q * double(values.size() - 1);
  const std::size_t lo = std::size_t(std::floor(pos));
  const std::size_t hi = std::min(lo + 1, values.size() - 1);
  return values[lo] + (pos - double(lo)) * (values[hi] - values[lo]);
}

namespace {

// Which runs pin a coefficient (or term) down.
std::string remedy_for(const std::string& name) {
  if (name == "a" || name == "alpha" || name == "a/N^alpha") {
    return "wider N: smaller and larger models (a factor of 10 or more in N), each at several D";
  }
  if (name == "g" || name == "gamma" || name == "g/(G^gamma N^alpha)") {
    return "more G: further granularities (e.g. G = 8, 16) at several N";
  }
  return "wider D: token budgets over a factor of 30-100, the largest long enough to bend the loss curve";
}

std::string fmt(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3g", v);
  return buf;
}

}  // namespace

std::vector<IdentifiabilityFlag> identifiability_flags(const FitResult& fit, const std::vector<Run>& runs,
                                                       const IdentifiabilityLimits& limits) {
  std::vector<IdentifiabilityFlag> flags;
  const LawCoefficients& k = fit.coefficients;
  const auto names = k.names();
  const auto values = k.values();
  if (fit.c_at_bound) {
    flags.push_back({"at_bound", "c", "c = " + fmt(k.c) + " sits on its lower bound: the fit would take c lower",
                     remedy_for("c")});
  }
  for (std::size_t i = 0; i < fit.bands.size() && i < names.size(); ++i) {
    const Band& b = fit.bands[i];
    const std::string band = "[" + fmt(b.p10) + ", " + fmt(b.p90) + "]";
    // Data exactly on the law (no noise) rightly give bands of no width.
    if (b.p90 - b.p10 <= 1e-9 * (1 + std::abs(values[i])) && fit.rmse > 1e-9) {
      if (names[i] == "c" && fit.c_at_bound) continue;  // said above
      flags.push_back({"degenerate_band", names[i],
                       "bootstrap band " + band + " has no width: the resamples do not move it", remedy_for(names[i])});
    } else if (!(b.p10 > 0) || b.p90 / b.p10 > limits.band_ratio) {
      const std::string span = b.p10 > 0 ? fmt(std::log10(b.p90 / b.p10)) + " orders of magnitude" : "zero or a change of sign";
      flags.push_back({"wide_band", names[i], "bootstrap band " + band + " spans " + span, remedy_for(names[i])});
    }
  }
  // A term whose spread over the runs is below the fit's RMSE cannot be told from c.
  const auto range_of = [&runs](const auto& term) {
    double lo = INFINITY, hi = -INFINITY;
    for (const Run& r : runs) {
      const double v = term(r);
      lo = std::min(lo, v);
      hi = std::max(hi, v);
    }
    return std::make_pair(lo, hi);
  };
  std::vector<std::pair<std::string, std::pair<double, double>>> terms;
  terms.push_back({"a/N^alpha", range_of([&k](const Run& r) { return k.a / std::pow(r.N, k.alpha); })});
  if (k.moe) {
    terms.push_back({"g/(G^gamma N^alpha)",
                     range_of([&k](const Run& r) { return k.g / std::pow(r.G, k.gamma) / std::pow(r.N, k.alpha); })});
  }
  terms.push_back({"b/D^beta", range_of([&k](const Run& r) { return k.b / std::pow(r.D, k.beta); })});
  for (const auto& [name, range] : terms) {
    if (range.second - range.first < fit.rmse) {
      flags.push_back({"vanishing_term", name,
                       name + " varies by " + fmt(range.second - range.first) + " over the runs (from " +
                           fmt(range.first) + " to " + fmt(range.second) + "), less than the fit's RMSE " +
                           fmt(fit.rmse) + ": its coefficients are not determined",
                       remedy_for(name)});
    }
  }
  if (!(fit.holdout_rel_rmse <= limits.holdout_rel_rmse)) {
    const std::string what = std::isfinite(fit.holdout_rel_rmse)
                                 ? "held-out relative RMSE " + fmt(100 * fit.holdout_rel_rmse) + "% is above " +
                                       fmt(100 * limits.holdout_rel_rmse) + "%"
                                 : "too few runs to hold any out";
    flags.push_back({"large_holdout_error", "held-out runs", what + ": the law does not extrapolate to the lowest-loss runs",
                     "more runs at the largest N and D, and a wider range of both"});
  }
  return flags;
}

FitResult fit_law(const std::vector<Run>& runs, const FitOptions& o) {
  const bool moe = runs.empty() ? true : runs[0].moe;
  const std::size_t n_coef = moe ? 7 : 5;
  validate(runs, moe, n_coef);

  std::vector<const Run*> all;
  for (const Run& r : runs) all.push_back(&r);
  const std::vector<Params> grid = start_grid(moe, o.start_levels);

  FitResult result;
  result.preset = o.preset;
  result.E = runs[0].E;
  result.n_runs = runs.size();
  const std::vector<Solution> minima = local_minima(all, moe, o, grid);
  if (minima.empty()) throw RuntimeFailure("no start of the fit converged");
  const Solution& best = minima.front();
  std::vector<Params> refit_starts;
  for (std::size_t i = 0; i < minima.size() && int(i) < std::max(1, o.refit_starts); ++i) {
    refit_starts.push_back(minima[i].p);
  }
  const std::size_t spread = std::min<std::size_t>(grid.size(), std::size_t(std::max(0, o.refit_grid_starts)));
  for (std::size_t i = 0; i < spread; ++i) refit_starts.push_back(grid[(2 * i + 1) * grid.size() / (2 * spread)]);
  result.coefficients = to_coefficients(best.p, moe);
  result.diagnostics = best.diagnostics;
  result.c_at_bound = std::isfinite(o.c_min) && best.p[6] <= o.c_min + 1e-9;
  result.predicted = predict_all(result.coefficients, all);
  result.rmse = rmse_of(result.predicted, losses_of(all));

  // Held out: the lowest-loss runs, fitted from the full grid without them.
  const double nan = std::numeric_limits<double>::quiet_NaN();
  result.holdout_rmse = result.holdout_rel_rmse = result.holdout_max_rel_error = nan;
  std::vector<const Run*> by_loss = all;
  std::sort(by_loss.begin(), by_loss.end(), [](const Run* x, const Run* y) { return x->loss < y->loss; });
  const std::size_t held = std::max<std::size_t>(1, std::size_t(std::lround(o.holdout_fraction * double(runs.size()))));
  if (runs.size() - held >= n_coef) {
    const std::vector<const Run*> test(by_loss.begin(), by_loss.begin() + held);
    const std::vector<const Run*> train(by_loss.begin() + held, by_loss.end());
    const Solution s = best_of(train, moe, o, grid);
    result.holdout_diagnostics = s.diagnostics;
    const std::vector<double> pred = predict_all(to_coefficients(s.p, moe), test);
    const std::vector<double> obs = losses_of(test);
    result.holdout_runs = held;
    result.holdout_rmse = rmse_of(pred, obs);
    double sq = 0, worst = 0;
    for (std::size_t i = 0; i < pred.size(); ++i) {
      const double rel = pred[i] / obs[i] - 1;
      sq += rel * rel;
      worst = std::max(worst, std::abs(rel));
    }
    result.holdout_rel_rmse = std::sqrt(sq / double(pred.size()));
    result.holdout_max_rel_error = worst;
  }

  // k-fold: folds by a seeded shuffle; each fold's fit starts from the refit starts.
  result.kfold_rmse = nan;
  if (o.kfold >= 2 && runs.size() / std::size_t(o.kfold) * std::size_t(o.kfold - 1) >= n_coef) {
    const uint64_t key = hash_combine(o.seed, hash_string("kfold"));
    std::vector<std::size_t> order(runs.size());
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [key](std::size_t x, std::size_t y) {
      return hash_combine(key, x) < hash_combine(key, y);
    });
    std::vector<double> pred(runs.size());
    const int k = o.kfold;
    result.kfold_diagnostics.resize(std::size_t(k));
    const int threads = thread_count(o);
#pragma omp parallel for schedule(dynamic) num_threads(threads) if (threads != 1)
    for (int fold = 0; fold < k; ++fold) {
      std::vector<const Run*> train;
      std::vector<std::size_t> test;
      for (std::size_t i = 0; i < order.size(); ++i) {
        if (int(i % std::size_t(k)) == fold) {
          test.push_back(order[i]);
        } else {
          train.push_back(all[order[i]]);
        }
      }
      const Solution s = refit(train, moe, o, refit_starts);
      result.kfold_diagnostics[std::size_t(fold)] = s.diagnostics;
      const LawCoefficients c = to_coefficients(s.p, moe);
      for (std::size_t t : test) pred[t] = c.predict(runs[t].N, runs[t].D, runs[t].G);
    }
    result.kfold_rmse = rmse_of(pred, losses_of(all));
  }

  // Bootstrap: resamples of bootstrap_fraction x n runs drawn with replacement, each fitted from
  // the refit starts (the full fit's best minima and points spread over the grid); the 10th and
  // 90th percentiles of each coefficient.
  if (o.bootstrap > 0) {
    const std::size_t m = std::max<std::size_t>(n_coef, std::size_t(std::lround(o.bootstrap_fraction * double(runs.size()))));
    const uint64_t key = hash_combine(o.seed, hash_string("bootstrap"));
    std::vector<Solution> samples(std::size_t(o.bootstrap));
    const int threads = thread_count(o);
#pragma omp parallel for schedule(dynamic) num_threads(threads) if (threads != 1)
    for (int b = 0; b < o.bootstrap; ++b) {
      std::vector<const Run*> sample;
      for (std::size_t i = 0; i < m; ++i) {
        const double u = uniform_open(hash_combine(key, uint64_t(b)), i);
        sample.push_back(all[std::min(runs.size() - 1, std::size_t(u * double(runs.size())))]);
      }
      samples[std::size_t(b)] = refit(sample, moe, o, refit_starts);
    }
    for (const auto& s : samples) {
      result.bootstrap_diagnostics.push_back(s.diagnostics);
      if (std::isfinite(s.cost)) result.bootstrap.push_back(to_coefficients(s.p, moe));
    }
    if (!result.bootstrap.empty()) {
      for (std::size_t c = 0; c < n_coef; ++c) {
        std::vector<double> values;
        for (const auto& k : result.bootstrap) values.push_back(k.values()[c]);
        result.bands.push_back({percentile(values, 0.1), percentile(values, 0.9)});
      }
      // c on its bound in at least 90% of the resamples: the percentile band has no width, and
      // the profile of the cost gives its upper end instead.
      Band& c_band = result.bands.back();
      if (result.c_at_bound && c_band.p90 <= o.c_min + 1e-9 * (1 + std::abs(o.c_min)) && result.rmse > 1e-9) {
        c_band = {o.c_min, profile_upper_limit_of_c(all, moe, o, best, n_coef)};
        result.c_band_from_profile = true;
      }
    }
  }
  result.flags = identifiability_flags(result, runs);
  return result;
}

}  // namespace finemoe::analysis
