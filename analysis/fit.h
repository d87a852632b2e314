#pragma once
// Fitting the scaling law to runs with Ceres Solver: Huber loss, multi-start from a grid,
// held-out and k-fold validation, bootstrap percentile bands.
#include <cstdint>
#include <string>
#include <vector>

#include "runs.h"
#include "scaling_law.h"

namespace finemoe::analysis {

// paper: Huber (delta 0.1) on the loss. chinchilla: the law as a log-sum-exp of its terms,
// Huber (delta 1e-3) on the log-loss (Hoffmann et al. 2022).
enum class FitPreset { paper, chinchilla };
FitPreset parse_fit_preset(const std::string& text);
std::string to_string(FitPreset preset);

struct FitOptions {
  FitPreset preset = FitPreset::paper;
  // L2 penalty weight_decay * |p|^2 on the solver's parameters p = (ln a, alpha, ln b, beta,
  // ln g, gamma, c), added to the Huber sum (the paper used 5e-4; 0 = none).
  double weight_decay = 0;
  // Values per coefficient in the multi-start grid: 2 (2^7 = 128 starts for MoE) or 3 (2187).
  int start_levels = 2;
  // Starts of each bootstrap (and k-fold) fit: the full fit's solution and the next best
  // distinct local minima the multi-start found, up to this many in all, plus refit_grid_starts
  // points of the start grid spread over it (a resample may have its optimum elsewhere: a fit
  // started only from the full fit's solution cannot leave a point where a term has vanished).
  int refit_starts = 2;
  int refit_grid_starts = 2;
  // Lower bound on c; -infinity = none.
  double c_min = 0;
  int bootstrap = 100;              // resamples; 0 = none
  double bootstrap_fraction = 0.8;  // each resample draws this fraction of the runs, with replacement
  double holdout_fraction = 0.2;    // the lowest-loss runs held out (the paper's validation)
  int kfold = 5;                    // 0 = none
  uint64_t seed = 1;
  int threads = 0;  // OpenMP threads for the independent fits; 0 = OpenMP's default
};

// How one solve ended (the full fit, the held-out fit, each k-fold and bootstrap fit).
struct FitDiagnostics {
  std::string optimizer;    // the stages run, e.g. "LM, then LM with c held at c_min"
  std::string termination;  // Ceres's termination type and message of the last stage
  bool converged = false;   // the last stage ended on a convergence test
  double cost = 0;          // the objective at the solution (docs/analysis.md)
  // max |d cost / d p| over the fitted parameters p, the c component dropped when c sits on
  // c_min and the slope pushes it below (the KKT condition there).
  double projected_gradient = 0;
};

// A reason the runs do not determine part of the law (docs/analysis.md, "Identifiability").
struct IdentifiabilityFlag {
  std::string kind;         // at_bound | degenerate_band | wide_band | vanishing_term | large_holdout_error
  std::string subject;      // the coefficient or term, e.g. "c", "a/N^alpha", "held-out runs"
  std::string detail;       // what was seen, with the numbers
  std::string remedy;       // which runs would pin it down
};

// Thresholds of the flags.
struct IdentifiabilityLimits {
  double band_ratio = 10;        // a band with p90 / p10 above this (or p10 <= 0) spans an order of magnitude
  double holdout_rel_rmse = 0.02;  // held-out relative RMSE above this is large
};

struct Band {
  double p10 = 0, p90 = 0;
};

struct FitResult {
  LawCoefficients coefficients;
  FitPreset preset = FitPreset::paper;
  int64_t E = 0;  // 0 for dense fits
  std::size_t n_runs = 0;
  std::vector<double> predicted;  // per run, in the order given
  double rmse = 0;                // on the loss, all runs
  // Fitted without the holdout_fraction lowest-loss runs, evaluated on them.
  std::size_t holdout_runs = 0;
  double holdout_rmse = 0;
  double holdout_rel_rmse = 0;  // root mean square of predicted / observed - 1
  double holdout_max_rel_error = 0;
  double kfold_rmse = 0;  // NaN when kfold = 0
  std::vector<LawCoefficients> bootstrap;
  std::vector<Band> bands;  // per coefficient, names() order; empty without bootstrap
  FitDiagnostics diagnostics;                      // of the full fit
  FitDiagnostics holdout_diagnostics;              // of the fit without the held-out runs
  std::vector<FitDiagnostics> kfold_diagnostics;   // per fold
  std::vector<FitDiagnostics> bootstrap_diagnostics;  // per resample, failed ones included
  // c ended on its lower bound c_min: the data do not pin c down (the unbounded fit would go
  // lower), and the bands of the other coefficients are conditional on c = c_min.
  bool c_at_bound = false;
  // c sat on its bound in at least 90% of the resamples, so its band is [c_min, the profile
  // cost's one-sided 90% upper limit] instead of the percentiles (docs/analysis.md).
  bool c_band_from_profile = false;
  std::vector<IdentifiabilityFlag> flags;  // empty: every coefficient determined by these runs
  bool identified() const { return flags.empty(); }
};

// The flags of a fit (fit_law sets result.flags with the default limits): c on its bound, a
// degenerate band (p90 - p10 <= 1e-9 (1 + |value|)), a band spanning an order of magnitude or
// more or reaching 0, a term of the law whose range over the runs is below the fit's RMSE, a
// held-out relative RMSE above the limit (or no held-out runs).
std::vector<IdentifiabilityFlag> identifiability_flags(const FitResult& fit, const std::vector<Run>& runs,
                                                       const IdentifiabilityLimits& limits = {});

// Fits one law to runs that are all MoE (with one E) or all dense. InputError on fewer runs
// than coefficients, mixed kinds or mixed E, naming the records.
FitResult fit_law(const std::vector<Run>& runs, const FitOptions& options);

// The q-th percentile (0..1) by linear interpolation between order statistics.
double percentile(std::vector<double> values, double q);

}  // namespace finemoe::analysis
