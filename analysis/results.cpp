#include "results.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <map>
#include <set>
#include <sstream>

#include "finemoe/version.h"
#include "io/h5.h"
#include "svg_plot.h"
#include "util/check.h"

namespace finemoe::analysis {
namespace {

namespace fs = std::filesystem;

std::string num(double v) {
  if (!std::isfinite(v)) return "null";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.10g", v);
  return buf;
}

std::string quoted(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += c;
    }
  }
  return out + "\"";
}

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) out += c == '"' ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

std::string csv_num(double v) { return std::isfinite(v) ? num(v) : ""; }

void prepare_dir(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (!fs::is_directory(dir)) throw InputError(dir + ": cannot create the output folder");
}

std::ofstream open_text(const std::string& path) {
  std::ofstream out(path);
  if (!out) throw InputError(path + ": cannot write");
  return out;
}

std::string law_name(bool moe) { return moe ? "moe" : "dense"; }

h5::File create_results_file(const std::string& path, const std::string& kind) {
  h5::File f = h5::File::create(path);
  f.set("kind", kind);
  f.set("finemoe_version", kVersion);
  f.set("git_commit", kGitCommit);
  return f;
}

void write_column(h5::Node& node, const std::string& name, const std::vector<double>& values) {
  node.create_series(name, h5::Type::float64).append(values);
}

// ------------------------------------------------------------------------------------- fit

struct FitPart {
  const FitResult& fit;
  const std::vector<Run>& runs;
};

std::vector<FitPart> parts(const FitReport& r) {
  std::vector<FitPart> out;
  if (r.moe) out.push_back({*r.moe, r.moe_runs});
  if (r.dense) out.push_back({*r.dense, r.dense_runs});
  return out;
}

std::vector<std::pair<std::string, double>> metrics(const FitResult& f) {
  return {{"rmse", f.rmse},
          {"holdout_rmse", f.holdout_rmse},
          {"holdout_rel_rmse", f.holdout_rel_rmse},
          {"holdout_max_rel_error", f.holdout_max_rel_error},
          {"kfold_rmse", f.kfold_rmse}};
}

// How many of the fits converged and the largest projected gradient among them.
struct DiagnosticsSummary {
  std::size_t fits = 0, converged = 0;
  double worst_gradient = 0;
};
DiagnosticsSummary summarize(const std::vector<FitDiagnostics>& d) {
  DiagnosticsSummary s;
  for (const auto& x : d) {
    ++s.fits;
    s.converged += x.converged;
    s.worst_gradient = std::max(s.worst_gradient, std::isfinite(x.projected_gradient) ? x.projected_gradient : INFINITY);
  }
  return s;
}

void write_diagnostics(h5::Node& g, const std::string& prefix, const std::vector<FitDiagnostics>& d) {
  std::vector<double> gradient, cost;
  std::vector<std::string> optimizer, termination;
  for (const auto& x : d) {
    gradient.push_back(x.projected_gradient);
    cost.push_back(x.cost);
    optimizer.push_back(x.optimizer);
    termination.push_back(x.termination);
  }
  write_column(g, prefix + "projected_gradient", gradient);
  write_column(g, prefix + "cost", cost);
  g.write_strings(prefix + "optimizer", optimizer);
  g.write_strings(prefix + "termination", termination);
}

void write_fit_group(h5::File& file, const FitPart& part) {
  const FitResult& f = part.fit;
  h5::Group g = file.create_group(law_name(f.coefficients.moe));
  const auto names = f.coefficients.names();
  const auto values = f.coefficients.values();
  for (std::size_t i = 0; i < names.size(); ++i) g.set(names[i], values[i]);
  g.set("preset", to_string(f.preset));
  g.set("E", f.E);
  g.set("n_runs", int64_t(f.n_runs));
  g.set("holdout_runs", int64_t(f.holdout_runs));
  g.set("c_at_bound", int64_t(f.c_at_bound));
  g.set("c_band_from_profile", int64_t(f.c_band_from_profile));
  g.set("identified", int64_t(f.identified()));
  {
    std::vector<std::string> kind, subject, detail, remedy;
    for (const auto& flag : f.flags) {
      kind.push_back(flag.kind);
      subject.push_back(flag.subject);
      detail.push_back(flag.detail);
      remedy.push_back(flag.remedy);
    }
    h5::Group flags = g.create_group("flags");
    flags.write_strings("kind", kind);
    flags.write_strings("subject", subject);
    flags.write_strings("detail", detail);
    flags.write_strings("remedy", remedy);
  }
  g.set("final_cost", f.diagnostics.cost);
  g.set("projected_gradient", f.diagnostics.projected_gradient);
  g.set("optimizer", f.diagnostics.optimizer);
  g.set("termination", f.diagnostics.termination);
  write_diagnostics(g, "holdout_", {f.holdout_diagnostics});
  write_diagnostics(g, "kfold_", f.kfold_diagnostics);
  write_diagnostics(g, "bootstrap_", f.bootstrap_diagnostics);
  for (const auto& [name, value] : metrics(f)) g.set(name, value);
  g.write_strings("coefficient_names", names);
  h5::Series boot = g.create_series("bootstrap", h5::Type::float64, {hsize_t(names.size())}, 64);
  for (const auto& k : f.bootstrap) boot.append(k.values());
  std::vector<double> p10, p90;
  for (const auto& b : f.bands) {
    p10.push_back(b.p10);
    p90.push_back(b.p90);
  }
  write_column(g, "band_p10", p10);
  write_column(g, "band_p90", p90);
  std::vector<double> N, D, G, loss;
  std::vector<std::string> paths;
  for (const Run& r : part.runs) {
    N.push_back(r.N);
    D.push_back(r.D);
    G.push_back(r.G);
    loss.push_back(r.loss);
    paths.push_back(r.path);
  }
  h5::Group runs = g.create_group("runs");
  runs.write_strings("path", paths);
  write_column(runs, "N", N);
  write_column(runs, "D", D);
  write_column(runs, "G", G);
  write_column(runs, "loss", loss);
  write_column(runs, "predicted", f.predicted);
}

// Points are runs, lines the fitted law; each granularity (or model size) has one colour.
void write_fit_plots(const std::string& dir, const FitReport& report) {
  PlotSpec ovp;
  ovp.title = "Observed vs predicted loss";
  ovp.note = "dashed: observed = predicted; points above it: the law is optimistic";
  ovp.x_label = "predicted loss (fitted law)";
  ovp.y_label = "observed loss (" + to_string(report.loss) + ")";
  ovp.diagonal = true;
  for (const FitPart& part : parts(report)) {
    PlotSeries s;
    char rmse[48];
    std::snprintf(rmse, sizeof rmse, " (RMSE %.3g)", part.fit.rmse);
    s.label = (part.fit.coefficients.moe ? "MoE E=" + std::to_string(part.fit.E) : std::string("dense")) + rmse;
    s.x = part.fit.predicted;
    for (const Run& r : part.runs) s.y.push_back(r.loss);
    ovp.series.push_back(s);
  }
  write_svg_plot(dir + "/observed_vs_predicted.svg", ovp);
  if (!report.moe) return;

  // Loss minus the fitted data term b / D^beta depends on N and G only: points from every D
  // collapse onto one curve per G.
  const LawCoefficients& k = report.moe->coefficients;
  const auto adjusted = [&k](const Run& r) { return r.loss - k.b / std::pow(r.D, k.beta); };
  const auto param_part = [&k](double N, double G) { return k.c + (k.g / std::pow(G, k.gamma) + k.a) / std::pow(N, k.alpha); };
  std::set<double> granularities, sizes;
  double n_lo = INFINITY, n_hi = 0;
  for (const Run& r : report.moe_runs) {
    granularities.insert(r.G);
    sizes.insert(r.N);
    n_lo = std::min(n_lo, r.N);
    n_hi = std::max(n_hi, r.N);
  }
  const std::string adjusted_label = "loss - b/D^beta (fitted b, beta)";
  const std::string note = "points: runs, every token budget D shifted to D = infinity; lines: fitted law";
  PlotSpec by_n;
  by_n.title = "Loss vs model size, per granularity G (MoE E=" + std::to_string(report.moe->E) + ")";
  by_n.note = note;
  by_n.x_label = "N: total non-embedding parameters";
  by_n.y_label = adjusted_label;
  by_n.log_x = by_n.log_y = true;
  by_n.x_format = TickFormat::count;
  int color = 0;
  for (double G : granularities) {
    PlotSeries pts, curve;
    pts.label = "G=" + num(G);
    pts.color = curve.color = color++;
    curve.line = true;
    for (const Run& r : report.moe_runs) {
      if (r.G != G) continue;
      pts.x.push_back(r.N);
      pts.y.push_back(adjusted(r));
    }
    for (int i = 0; i <= 40; ++i) {
      const double N = n_lo * std::pow(n_hi / n_lo, i / 40.0);
      curve.x.push_back(N);
      curve.y.push_back(param_part(N, G));
    }
    by_n.series.push_back(pts);
    by_n.series.push_back(curve);
  }
  write_svg_plot(dir + "/loss_vs_N.svg", by_n);

  PlotSpec by_g;
  by_g.title = "Loss vs granularity G, per model size N (MoE E=" + std::to_string(report.moe->E) + ")";
  by_g.note = note;
  by_g.x_label = "granularity G";
  by_g.y_label = adjusted_label;
  by_g.log2_x = true;
  const double g_lo = *granularities.begin(), g_hi = *granularities.rbegin();
  color = 0;
  for (double N : sizes) {
    PlotSeries pts, curve;
    char label[32];
    if (N >= 1e9) {
      std::snprintf(label, sizeof label, "N=%.3gB", N / 1e9);
    } else {
      std::snprintf(label, sizeof label, "N=%.3gM", N / 1e6);
    }
    pts.label = label;
    pts.color = curve.color = color++;
    curve.line = true;
    for (const Run& r : report.moe_runs) {
      if (r.N != N) continue;
      pts.x.push_back(r.G);
      pts.y.push_back(adjusted(r));
    }
    for (int i = 0; i <= 40; ++i) {
      const double G = g_lo * std::pow(g_hi / g_lo, i / 40.0);
      curve.x.push_back(G);
      curve.y.push_back(param_part(N, G));
    }
    by_g.series.push_back(pts);
    by_g.series.push_back(curve);
  }
  write_svg_plot(dir + "/loss_vs_G.svg", by_g);
}

}  // namespace

void write_fit_files(const std::string& dir, const FitReport& report) {
  prepare_dir(dir);
  {
    h5::File file = create_results_file(dir + "/fit.h5", "finemoe-analyze fit");
    file.set("loss_source", to_string(report.loss));
    for (const FitPart& part : parts(report)) write_fit_group(file, part);
    h5::Group skipped = file.create_group("skipped");
    std::vector<std::string> paths, states, reasons;
    for (const auto& s : report.skipped) {
      paths.push_back(s.path);
      states.push_back(s.state);
      reasons.push_back(s.reason);
    }
    skipped.write_strings("path", paths);
    skipped.write_strings("state", states);
    skipped.write_strings("reason", reasons);
    file.flush();
  }
  std::ofstream csv = open_text(dir + "/fit.csv");
  csv << "law,quantity,value,p10,p90\n";
  std::ofstream flags_csv = open_text(dir + "/fit_flags.csv");
  flags_csv << "law,kind,subject,detail,remedy\n";
  for (const FitPart& part : parts(report)) {
    for (const auto& flag : part.fit.flags) {
      flags_csv << law_name(part.fit.coefficients.moe) << "," << flag.kind << "," << csv_field(flag.subject) << ","
                << csv_field(flag.detail) << "," << csv_field(flag.remedy) << "\n";
    }
  }
  std::ofstream runs_csv = open_text(dir + "/fit_runs.csv");
  runs_csv << "law,path,N,D,G,E,loss,predicted\n";
  for (const FitPart& part : parts(report)) {
    const FitResult& f = part.fit;
    const std::string law = law_name(f.coefficients.moe);
    const auto names = f.coefficients.names();
    const auto values = f.coefficients.values();
    for (std::size_t i = 0; i < names.size(); ++i) {
      csv << law << "," << names[i] << "," << num(values[i]) << ","
          << (f.bands.empty() ? "" : num(f.bands[i].p10)) << "," << (f.bands.empty() ? "" : num(f.bands[i].p90))
          << "\n";
    }
    for (const auto& [name, value] : metrics(f)) csv << law << "," << name << "," << csv_num(value) << ",,\n";
    csv << law << ",n_runs," << f.n_runs << ",,\n";
    csv << law << ",identified," << int(f.identified()) << ",,\n";
    csv << law << ",final_cost," << csv_num(f.diagnostics.cost) << ",,\n";
    csv << law << ",projected_gradient," << csv_num(f.diagnostics.projected_gradient) << ",,\n";
    for (std::size_t i = 0; i < part.runs.size(); ++i) {
      const Run& r = part.runs[i];
      runs_csv << law << "," << csv_field(r.path) << "," << num(r.N) << "," << num(r.D) << "," << num(r.G) << ","
               << r.E << "," << num(r.loss) << "," << num(f.predicted[i]) << "\n";
    }
  }
  write_fit_plots(dir, report);
}

void print_fit_table(std::ostream& os, const FitReport& report) {
  os << "loss: " << to_string(report.loss) << "; " << report.moe_runs.size() << " MoE and "
     << report.dense_runs.size() << " dense completed runs\n";
  for (const FitPart& part : parts(report)) {
    const FitResult& f = part.fit;
    os << "\n" << (f.coefficients.moe ? "MoE law (E = " + std::to_string(f.E) + ")" : std::string("dense law"))
       << ", preset " << to_string(f.preset) << ", " << f.n_runs << " runs\n";
    os << "  coefficient            value              p10              p90\n";
    const auto names = f.coefficients.names();
    const auto values = f.coefficients.values();
    for (std::size_t i = 0; i < names.size(); ++i) {
      os << "  " << std::left << std::setw(11) << names[i] << std::right << " " << std::setw(16) << num(values[i]);
      if (!f.bands.empty()) os << " " << std::setw(16) << num(f.bands[i].p10) << " " << std::setw(16) << num(f.bands[i].p90);
      os << "\n";
    }
    os << "  RMSE " << num(f.rmse) << "; held out (" << f.holdout_runs << " lowest-loss runs) RMSE "
       << num(f.holdout_rmse) << ", relative " << num(100 * f.holdout_rel_rmse) << "% (max "
       << num(100 * f.holdout_max_rel_error) << "%); k-fold RMSE " << num(f.kfold_rmse) << "; "
       << f.bootstrap.size() << " bootstrap fits\n";
    os << "  full fit: " << f.diagnostics.optimizer << ": " << f.diagnostics.termination << "\n"
       << "            cost " << num(f.diagnostics.cost) << ", projected gradient " << num(f.diagnostics.projected_gradient)
       << "\n";
    for (const auto& [name, list] : {std::pair<std::string, std::vector<FitDiagnostics>>{"held-out fit", {f.holdout_diagnostics}},
                                     {"k-fold fits", f.kfold_diagnostics},
                                     {"bootstrap fits", f.bootstrap_diagnostics}}) {
      if (list.empty() || (list.size() == 1 && list[0].termination.empty())) continue;
      const DiagnosticsSummary d = summarize(list);
      os << "  " << name << ": " << d.converged << " of " << d.fits << " ended on a convergence test; largest projected gradient "
         << num(d.worst_gradient) << "\n";
    }
    if (f.identified()) {
      os << "  identified: every coefficient strictly inside its bounds, bands neither degenerate nor wider than "
            "an order of magnitude, every term above the noise, held-out error within 2%\n";
    } else {
      os << "  NOT IDENTIFIED by these runs (" << f.flags.size() << " flag" << (f.flags.size() == 1 ? "" : "s")
         << "); read its coefficients as a description of these runs, not as a law:\n";
      for (const auto& flag : f.flags) {
        os << "  - " << flag.subject << " (" << flag.kind << "): " << flag.detail << ".\n      would pin it down: "
           << flag.remedy << "\n";
      }
      if (f.c_at_bound) os << "  the bands of the other coefficients are conditional on c = c_min\n";
      if (f.c_band_from_profile) {
        os << "  c's band is [c_min, the profile cost's one-sided 90% upper limit]: c sat on c_min in the resamples\n";
      }
    }
  }
  if (!report.skipped.empty()) {
    os << "\nleft out " << report.skipped.size() << " record(s):\n";
    for (const auto& s : report.skipped) os << "  " << s.path << ": " << s.state << ": " << s.reason << "\n";
  }
}

void print_fit_json(std::ostream& os, const FitReport& report) {
  os << "{\"loss\": " << quoted(to_string(report.loss)) << ", \"fits\": [";
  bool first = true;
  for (const FitPart& part : parts(report)) {
    const FitResult& f = part.fit;
    os << (first ? "" : ", ") << "{\"law\": " << quoted(law_name(f.coefficients.moe)) << ", \"E\": " << f.E
       << ", \"preset\": " << quoted(to_string(f.preset)) << ", \"n_runs\": " << f.n_runs
       << ", \"holdout_runs\": " << f.holdout_runs << ", \"bootstrap_fits\": " << f.bootstrap.size()
       << ", \"coefficients\": {";
    first = false;
    const auto names = f.coefficients.names();
    const auto values = f.coefficients.values();
    for (std::size_t i = 0; i < names.size(); ++i) {
      os << (i ? ", " : "") << quoted(names[i]) << ": {\"value\": " << num(values[i]);
      if (!f.bands.empty()) os << ", \"p10\": " << num(f.bands[i].p10) << ", \"p90\": " << num(f.bands[i].p90);
      os << "}";
    }
    os << "}";
    for (const auto& [name, value] : metrics(f)) os << ", " << quoted(name) << ": " << num(value);
    os << ", \"c_at_bound\": " << (f.c_at_bound ? "true" : "false");
    os << ", \"c_band_from_profile\": " << (f.c_band_from_profile ? "true" : "false");
    os << ", \"identified\": " << (f.identified() ? "true" : "false") << ", \"flags\": [";
    for (std::size_t i = 0; i < f.flags.size(); ++i) {
      const auto& flag = f.flags[i];
      os << (i ? ", " : "") << "{\"kind\": " << quoted(flag.kind) << ", \"subject\": " << quoted(flag.subject)
         << ", \"detail\": " << quoted(flag.detail) << ", \"remedy\": " << quoted(flag.remedy) << "}";
    }
    os << "]";
    os << ", \"final_cost\": " << num(f.diagnostics.cost) << ", \"projected_gradient\": " << num(f.diagnostics.projected_gradient)
       << ", \"optimizer\": " << quoted(f.diagnostics.optimizer) << ", \"termination\": " << quoted(f.diagnostics.termination);
    for (const auto& [name, list] : {std::pair<std::string, std::vector<FitDiagnostics>>{"kfold", f.kfold_diagnostics},
                                     {"bootstrap", f.bootstrap_diagnostics}}) {
      const DiagnosticsSummary d = summarize(list);
      os << ", " << quoted(name + "_converged") << ": " << d.converged << ", " << quoted(name + "_max_projected_gradient")
         << ": " << num(d.worst_gradient);
    }
    os << "}";
  }
  os << "], \"skipped\": [";
  for (std::size_t i = 0; i < report.skipped.size(); ++i) {
    const auto& s = report.skipped[i];
    os << (i ? ", " : "") << "{\"path\": " << quoted(s.path) << ", \"state\": " << quoted(s.state)
       << ", \"reason\": " << quoted(s.reason) << "}";
  }
  os << "]}\n";
}

StoredFit read_fit_file(const std::string& path) {
  const h5::File f = h5::File::open(path, false);
  try {
    if (!f.has_attribute("kind") || f.get_string("kind") != "finemoe-analyze fit") {
      throw InputError(path + ": not a fit file written by finemoe-analyze fit");
    }
    StoredFit out;
    for (bool moe : {true, false}) {
      if (!f.has_child(law_name(moe))) continue;
      const h5::Group g = f.open_group(law_name(moe));
      LawCoefficients k;
      k.moe = moe;
      std::vector<double> values;
      for (const auto& name : k.names()) values.push_back(g.get_double(name));
      (moe ? out.moe : out.dense) = LawCoefficients::from_values(moe, values);
      (moe ? out.moe_identified : out.dense_identified) = !g.has_attribute("identified") || g.get_int64("identified") != 0;
      if (moe) {
        out.E = g.get_int64("E");
        const h5::Series boot = g.open_series("bootstrap");
        const std::vector<double> flat = boot.read_double();
        for (std::size_t i = 0; i + 7 <= flat.size(); i += 7) {
          out.moe_bootstrap.push_back(
              LawCoefficients::from_values(true, std::vector<double>(flat.begin() + long(i), flat.begin() + long(i) + 7)));
        }
      }
    }
    if (!out.moe && !out.dense) throw InputError(path + ": the fit file holds neither a moe nor a dense law");
    return out;
  } catch (const RuntimeFailure& e) {
    throw InputError(path + ": damaged fit file: " + e.what());
  }
}

// --------------------------------------------------------------------------------- optimal

void write_optimal_files(const std::string& dir, const OptimalReport& report) {
  prepare_dir(dir);
  std::vector<double> budget, G, n_blocks, d_model, N_active, N_total, D, loss;
  std::vector<double> N_p10, N_p90, D_p10, D_p90, G_p10, G_p90;
  for (const auto& row : report.rows) {
    const OptimalConfig& c = row.best;
    budget.push_back(c.budget);
    G.push_back(c.G);
    n_blocks.push_back(c.n_blocks);
    d_model.push_back(c.d_model);
    N_active.push_back(c.N_active);
    N_total.push_back(c.N_total);
    D.push_back(c.D);
    loss.push_back(c.loss);
    const double nan = NAN;
    N_p10.push_back(row.has_bands ? row.N_active.p10 : nan);
    N_p90.push_back(row.has_bands ? row.N_active.p90 : nan);
    D_p10.push_back(row.has_bands ? row.D.p10 : nan);
    D_p90.push_back(row.has_bands ? row.D.p90 : nan);
    G_p10.push_back(row.has_bands ? row.G.p10 : nan);
    G_p90.push_back(row.has_bands ? row.G.p90 : nan);
  }
  {
    h5::File file = create_results_file(dir + "/optimal.h5", "finemoe-analyze optimal");
    file.set("source", report.source);
    file.set("E", report.E);
    file.set("identified", int64_t(report.identified));
    const std::vector<std::pair<const char*, const std::vector<double>*>> columns = {
        {"budget", &budget},   {"G", &G},           {"n_blocks", &n_blocks}, {"d_model", &d_model},
        {"N_active", &N_active}, {"N_total", &N_total}, {"D", &D},           {"loss", &loss},
        {"N_active_p10", &N_p10}, {"N_active_p90", &N_p90}, {"D_p10", &D_p10}, {"D_p90", &D_p90},
        {"G_p10", &G_p10},     {"G_p90", &G_p90}};
    for (const auto& [name, values] : columns) write_column(file, name, *values);
    file.flush();
  }
  std::ofstream csv = open_text(dir + "/optimal.csv");
  csv << "budget,G,n_blocks,d_model,N_active,N_total,D,loss,N_active_p10,N_active_p90,D_p10,D_p90,G_p10,G_p90\n";
  for (std::size_t i = 0; i < budget.size(); ++i) {
    csv << num(budget[i]) << "," << num(G[i]) << "," << num(n_blocks[i]) << "," << num(d_model[i]) << ","
        << num(N_active[i]) << "," << num(N_total[i]) << "," << num(D[i]) << "," << num(loss[i]) << ","
        << csv_num(N_p10[i]) << "," << csv_num(N_p90[i]) << "," << csv_num(D_p10[i]) << "," << csv_num(D_p90[i])
        << "," << csv_num(G_p10[i]) << "," << csv_num(G_p90[i]) << "\n";
  }
  const bool bands = !report.rows.empty() && report.rows[0].has_bands;
  const std::string band_note = bands ? "dashed: bootstrap 10th and 90th percentiles" : "";
  PlotSpec g_plot;
  g_plot.title = "Compute-optimal granularity vs training budget";
  g_plot.note = band_note;
  g_plot.x_label = "training FLOPs";
  g_plot.y_label = "optimal granularity G";
  g_plot.log_x = true;
  g_plot.log2_y = true;
  g_plot.series.push_back({"optimal G", budget, G, true, 0, false});
  g_plot.series.push_back({"", budget, G, false, 0, false});  // markers at the budgets computed
  if (bands) {
    g_plot.series.push_back({"G p10 / p90", budget, G_p10, true, 0, true});
    g_plot.series.push_back({"", budget, G_p90, true, 0, true});
  }
  write_svg_plot(dir + "/optimal_G.svg", g_plot);
  PlotSpec n_plot;
  n_plot.title = "Compute-optimal model size and tokens vs training budget";
  n_plot.note = band_note;
  n_plot.x_label = "training FLOPs";
  n_plot.y_label = "active parameters N_active / training tokens D";
  n_plot.log_x = n_plot.log_y = true;
  n_plot.y_format = TickFormat::count;
  n_plot.series.push_back({"N_active", budget, N_active, true, 0, false});
  n_plot.series.push_back({"D (tokens)", budget, D, true, 1, false});
  n_plot.series.push_back({"", budget, N_active, false, 0, false});
  n_plot.series.push_back({"", budget, D, false, 1, false});
  if (bands) {
    n_plot.series.push_back({"N_active p10 / p90", budget, N_p10, true, 0, true});
    n_plot.series.push_back({"", budget, N_p90, true, 0, true});
    n_plot.series.push_back({"D p10 / p90", budget, D_p10, true, 1, true});
    n_plot.series.push_back({"", budget, D_p90, true, 1, true});
  }
  write_svg_plot(dir + "/optimal_N_D.svg", n_plot);
}

void print_optimal_table(std::ostream& os, const OptimalReport& report) {
  if (!report.identified) {
    os << "EXTRAPOLATION, not a result: " << report.source
       << " holds a law these runs do not identify (see the flags of `fit`).\n"
          "The rows are where that formula's minimum falls; the bootstrap band under each row is the spread\n"
          "over resamples. Do not read them as compute-optimal configurations.\n";
  }
  os << (report.identified ? "compute-optimal configurations (" : "extrapolated optimum of an unidentified law (")
     << report.source << ", E = " << num(report.E) << ")\n";
  os << "     FLOPs     G  n_blocks  d_model    N_active     N_total           D    loss\n";
  for (const auto& row : report.rows) {
    const OptimalConfig& c = row.best;
    char line[200];
    std::snprintf(line, sizeof line, "%10.3g %5.0f %9.2f %8.0f %11.4g %11.4g %11.4g %7.4f\n", c.budget, c.G,
                  c.n_blocks, c.d_model, c.N_active, c.N_total, c.D, c.loss);
    os << line;
    if (row.has_bands) {
      std::snprintf(line, sizeof line,
                    "           bootstrap p10-p90: G %g-%g, N_active %.4g-%.4g, D %.4g-%.4g, loss %.4f-%.4f\n",
                    row.G.p10, row.G.p90, row.N_active.p10, row.N_active.p90, row.D.p10, row.D.p90, row.loss.p10,
                    row.loss.p90);
      os << line;
    }
  }
}

void print_optimal_json(std::ostream& os, const OptimalReport& report) {
  os << "{\"source\": " << quoted(report.source) << ", \"E\": " << num(report.E)
     << ", \"identified\": " << (report.identified ? "true" : "false") << ", \"rows\": [";
  for (std::size_t i = 0; i < report.rows.size(); ++i) {
    const OptimalRow& row = report.rows[i];
    const OptimalConfig& c = row.best;
    os << (i ? ", " : "") << "{\"budget\": " << num(c.budget) << ", \"G\": " << num(c.G)
       << ", \"n_blocks\": " << num(c.n_blocks) << ", \"d_model\": " << num(c.d_model)
       << ", \"N_active\": " << num(c.N_active) << ", \"N_total\": " << num(c.N_total) << ", \"D\": " << num(c.D)
       << ", \"loss\": " << num(c.loss);
    if (row.has_bands) {
      os << ", \"bands\": {\"G\": [" << num(row.G.p10) << ", " << num(row.G.p90) << "], \"N_active\": ["
         << num(row.N_active.p10) << ", " << num(row.N_active.p90) << "], \"D\": [" << num(row.D.p10) << ", "
         << num(row.D.p90) << "], \"loss\": [" << num(row.loss.p10) << ", " << num(row.loss.p90) << "]}";
    }
    os << ", \"per_G\": [";
    for (std::size_t k = 0; k < row.per_G.size(); ++k) {
      const OptimalConfig& p = row.per_G[k];
      os << (k ? ", " : "") << "{\"G\": " << num(p.G) << ", \"N_active\": " << num(p.N_active)
         << ", \"D\": " << num(p.D) << ", \"loss\": " << num(p.loss) << "}";
    }
    os << "]}";
  }
  os << "]}\n";
}

// --------------------------------------------------------------------------------- compare

void write_compare_files(const std::string& dir, const CompareReport& report) {
  prepare_dir(dir);
  std::vector<double> budget, G, moe_loss, dense_loss, equivalent, multiplier;
  for (const auto& r : report.rows) {
    budget.push_back(r.budget);
    G.push_back(r.moe.G);
    moe_loss.push_back(r.moe.loss);
    dense_loss.push_back(r.dense.loss);
    equivalent.push_back(r.dense_equivalent_flops);
    multiplier.push_back(r.multiplier);
  }
  {
    h5::File file = create_results_file(dir + "/compare.h5", "finemoe-analyze compare");
    file.set("source", report.source);
    file.set("E", report.E);
    write_column(file, "budget", budget);
    write_column(file, "moe_G", G);
    write_column(file, "moe_loss", moe_loss);
    write_column(file, "dense_loss", dense_loss);
    write_column(file, "dense_equivalent_flops", equivalent);
    write_column(file, "multiplier", multiplier);
    file.flush();
  }
  std::ofstream csv = open_text(dir + "/compare.csv");
  csv << "budget,moe_G,moe_loss,dense_loss,dense_equivalent_flops,multiplier\n";
  for (std::size_t i = 0; i < budget.size(); ++i) {
    csv << num(budget[i]) << "," << num(G[i]) << "," << num(moe_loss[i]) << "," << num(dense_loss[i]) << ","
        << csv_num(equivalent[i]) << "," << csv_num(multiplier[i]) << "\n";
  }
  PlotSpec plot;
  plot.title = "Dense compute needed to match the compute-optimal MoE";
  plot.x_label = "training FLOPs (MoE)";
  plot.y_label = "dense-equivalent compute multiplier";
  plot.log_x = true;
  plot.series.push_back({"multiplier", budget, multiplier, true, 0, false});
  write_svg_plot(dir + "/compare.svg", plot);
}

void print_compare_table(std::ostream& os, const CompareReport& report) {
  os << "dense-equivalent compute of the compute-optimal MoE (" << report.source << ", E = " << num(report.E)
     << ")\n     FLOPs  MoE G  MoE loss  dense loss  dense FLOPs for MoE loss  multiplier\n";
  for (const auto& r : report.rows) {
    char line[200];
    std::snprintf(line, sizeof line, "%10.3g %6.0f %9.4f %11.4f %25.4g %11.2f\n", r.budget, r.moe.G, r.moe.loss,
                  r.dense.loss, r.dense_equivalent_flops, r.multiplier);
    os << line;
  }
}

void print_compare_json(std::ostream& os, const CompareReport& report) {
  os << "{\"source\": " << quoted(report.source) << ", \"E\": " << num(report.E) << ", \"rows\": [";
  for (std::size_t i = 0; i < report.rows.size(); ++i) {
    const CompareRow& r = report.rows[i];
    os << (i ? ", " : "") << "{\"budget\": " << num(r.budget) << ", \"moe_G\": " << num(r.moe.G)
       << ", \"moe_loss\": " << num(r.moe.loss) << ", \"dense_loss\": " << num(r.dense.loss)
       << ", \"dense_equivalent_flops\": " << num(r.dense_equivalent_flops)
       << ", \"multiplier\": " << num(r.multiplier) << "}";
  }
  os << "]}\n";
}

}  // namespace finemoe::analysis
