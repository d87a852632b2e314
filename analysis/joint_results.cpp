#include "joint_results.h"

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <map>
#include <sstream>

#include "util/check.h"

namespace finemoe::analysis {
namespace {

std::string g17(double v) {
  std::ostringstream os;
  os << std::setprecision(17) << v;
  return os.str();
}

std::vector<std::string> split_csv(const std::string& line) {
  std::vector<std::string> out;
  std::stringstream ss(line);
  std::string item;
  while (std::getline(ss, item, ',')) out.push_back(item);
  if (!line.empty() && line.back() == ',') out.push_back("");
  return out;
}

double to_number(const std::string& path, int line, const std::string& text) {
  if (text == "inf") return INFINITY;
  std::size_t used = 0;
  double v = 0;
  try {
    v = std::stod(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != text.size()) {
    throw InputError(path + ":" + std::to_string(line) + ": '" + text + "' is not a number");
  }
  return v;
}

}  // namespace

void write_joint_fit_files(const std::string& dir, const JointFitResult& fit, const std::vector<JointRun>& runs) {
  std::filesystem::create_directories(dir);
  std::ofstream csv(dir + "/joint_fit.csv");
  csv << "kind,name,value,p10,p90\n";
  csv << "meta,form," << (fit.law.fine_grained ? "fine-grained" : "published") << ",,\n";
  csv << "meta,e_start," << g17(fit.law.transform.e_start) << ",,\n";
  csv << "meta,e_max," << (std::isfinite(fit.law.transform.e_max) ? g17(fit.law.transform.e_max) : "inf") << ",,\n";
  csv << "meta,identified," << int(fit.identified()) << ",,\n";
  csv << "meta,runs," << fit.n_runs << ",,\n";
  csv << "meta,rmse," << g17(fit.rmse) << ",,\n";
  const auto names = fit.law.names();
  const auto values = fit.law.values();
  for (std::size_t i = 0; i < names.size(); ++i) {
    csv << "coefficient," << names[i] << "," << g17(values[i]) << ",";
    if (i < fit.bands.size()) csv << g17(fit.bands[i].p10) << "," << g17(fit.bands[i].p90);
    else csv << ",";
    csv << "\n";
  }
  for (const auto& f : fit.flags) csv << "flag," << f.kind << "," << f.subject << ",,\n";
  std::ofstream boot(dir + "/joint_bootstrap.csv");
  for (std::size_t i = 0; i < names.size(); ++i) boot << (i ? "," : "") << names[i];
  boot << "\n";
  for (const JointLaw& k : fit.bootstrap) {
    const auto v = k.values();
    for (std::size_t i = 0; i < v.size(); ++i) boot << (i ? "," : "") << g17(v[i]);
    boot << "\n";
  }
  std::ofstream per_run(dir + "/joint_fit_runs.csv");
  per_run << "path,N_active,D,E,G,loss,predicted\n";
  for (std::size_t i = 0; i < runs.size(); ++i) {
    const JointRun& r = runs[i];
    per_run << r.path << "," << g17(r.N_active) << "," << g17(r.D) << "," << r.E << "," << r.G << "," << g17(r.loss)
            << "," << g17(fit.predicted[i]) << "\n";
  }
}

void print_joint_fit_table(std::ostream& os, const JointFitResult& fit) {
  const JointLaw& k = fit.law;
  os << "joint law (" << (k.fine_grained ? "with the fine-grained term" : "as published") << "), " << fit.n_runs
     << " runs, " << fit.distinct_E << " values of E, " << fit.distinct_G << " of G; Ê: E_start " << k.transform.e_start
     << ", E_max " << k.transform.e_max << "\n";
  os << (k.fine_grained ? "  L = (a + g G^-kappa) Ê^delta N_act^(alpha + gamma ln Ê) + b Ê^omega D^(beta + zeta ln Ê) + c\n"
                        : "  L = a Ê^delta N_act^(alpha + gamma ln Ê) + b Ê^omega D^(beta + zeta ln Ê) + c\n");
  const auto names = k.names();
  const auto values = k.values();
  char line[160];
  for (std::size_t i = 0; i < names.size(); ++i) {
    if (i < fit.bands.size()) {
      std::snprintf(line, sizeof line, "  %-6s %12.6g   [%.4g, %.4g]\n", names[i].c_str(), values[i], fit.bands[i].p10,
                    fit.bands[i].p90);
    } else {
      std::snprintf(line, sizeof line, "  %-6s %12.6g\n", names[i].c_str(), values[i]);
    }
    os << line;
  }
  os << "  RMSE " << fit.rmse << "; optimizer " << fit.diagnostics.termination << "\n";
  if (fit.identified()) {
    os << "  identified: no coefficient on a bound, no degenerate or sign-spanning band\n";
  } else {
    for (const auto& f : fit.flags) os << "  NOT IDENTIFIED [" << f.kind << "] " << f.subject << ": " << f.detail << "; remedy: " << f.remedy << "\n";
  }
}

StoredJointFit read_joint_fit(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw InputError(path + ": cannot read the joint fit file (written by `finemoe-analyze fit --law joint`)");
  std::string line;
  std::getline(in, line);
  if (line != "kind,name,value,p10,p90") throw InputError(path + ":1: not a joint_fit.csv (header '" + line + "')");
  bool fine_grained = false, have_form = false;
  ExpertTransform transform;
  std::map<std::string, double> coef;
  StoredJointFit out;
  int n = 1;
  while (std::getline(in, line)) {
    ++n;
    const auto f = split_csv(line);
    if (f.size() != 5) throw InputError(path + ":" + std::to_string(n) + ": expected 5 fields");
    if (f[0] == "meta" && f[1] == "form") fine_grained = f[2] == "fine-grained", have_form = true;
    else if (f[0] == "meta" && f[1] == "e_start") transform.e_start = to_number(path, n, f[2]);
    else if (f[0] == "meta" && f[1] == "e_max") transform.e_max = to_number(path, n, f[2]);
    else if (f[0] == "meta" && f[1] == "identified") out.identified = f[2] != "0";
    else if (f[0] == "coefficient") coef[f[1]] = to_number(path, n, f[2]);
  }
  if (!have_form) throw InputError(path + ": no 'meta,form' line");
  JointLaw names_of;
  names_of.fine_grained = fine_grained;
  std::vector<double> v;
  for (const auto& name : names_of.names()) {
    if (!coef.count(name)) throw InputError(path + ": coefficient '" + name + "' is missing");
    v.push_back(coef[name]);
  }
  out.law = JointLaw::from_values(fine_grained, v, transform);
  const std::string boot_path = (std::filesystem::path(path).parent_path() / "joint_bootstrap.csv").string();
  std::ifstream boot(boot_path);
  if (boot) {
    std::getline(boot, line);
    int b = 1;
    while (std::getline(boot, line)) {
      ++b;
      std::vector<double> row;
      for (const auto& t : split_csv(line)) row.push_back(to_number(boot_path, b, t));
      if (row.size() != v.size()) throw InputError(boot_path + ":" + std::to_string(b) + ": wrong number of coefficients");
      out.bootstrap.push_back(JointLaw::from_values(fine_grained, row, transform));
    }
  }
  return out;
}

void print_joint_optimal_table(std::ostream& os, const JointOptimalReport& r) {
  if (!r.identified) {
    os << "WARNING: the law is not identified by its runs (identifiability flags in the fit): the optimum below is an "
          "EXTRAPOLATION, not a prediction\n";
  }
  os << (r.identified ? "compute-optimal configurations over E and G (" : "extrapolated optimum of an unidentified law (")
     << r.source << ")";
  if (r.max_total_params > 0) os << ", at most " << r.max_total_params << " total parameters";
  os << "\n";
  char line[240];
  std::snprintf(line, sizeof line, "%10s %5s %4s %9s %9s %10s %10s %10s %8s %s\n", "FLOPs", "E", "G", "d_model", "blocks",
                "N_active", "N_total", "D", "loss", "bands (E, G, loss)");
  os << line;
  for (const auto& row : r.rows) {
    const JointConfig& c = row.best;
    std::string bands;
    if (row.has_bands) {
      char b[120];
      std::snprintf(b, sizeof b, "E [%g, %g] G [%g, %g] loss [%.4f, %.4f]", row.E.p10, row.E.p90, row.G.p10, row.G.p90,
                    row.loss.p10, row.loss.p90);
      bands = b;
    }
    std::snprintf(line, sizeof line, "%10.3g %5g %4g %9.0f %9.2f %10.3g %10.3g %10.3g %8.4f %s%s\n", c.budget, c.E, c.G,
                  c.d_model, c.n_blocks, c.N_active, c.N_total, c.D, c.loss, bands.c_str(),
                  c.memory_bound ? " (on the parameter cap)" : "");
    os << line;
    for (const JointConfig& e : row.per_E) {
      std::snprintf(line, sizeof line, "%10s %5g %4g %9.0f %9.2f %10.3g %10.3g %10.3g %8.4f%s\n", "  per E:", e.E, e.G,
                    e.d_model, e.n_blocks, e.N_active, e.N_total, e.D, e.loss, e.memory_bound ? " (cap)" : "");
      os << line;
    }
  }
}

void write_joint_optimal_csv(const std::string& dir, const JointOptimalReport& r) {
  std::filesystem::create_directories(dir);
  std::ofstream csv(dir + "/joint_optimal.csv");
  csv << "budget,best,E,G,n_blocks,d_model,N_active,N_total,D,loss,memory_bound,identified\n";
  for (const auto& row : r.rows) {
    const auto put = [&](const JointConfig& c, int best) {
      csv << g17(c.budget) << "," << best << "," << c.E << "," << c.G << "," << g17(c.n_blocks) << "," << g17(c.d_model)
          << "," << g17(c.N_active) << "," << g17(c.N_total) << "," << g17(c.D) << "," << g17(c.loss) << ","
          << int(c.memory_bound) << "," << int(r.identified) << "\n";
    };
    put(row.best, 1);
    for (const auto& c : row.per_E) put(c, 0);
  }
}

}  // namespace finemoe::analysis
