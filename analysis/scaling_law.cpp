#include "scaling_law.h"

#include <cmath>

#include "util/check.h"

namespace finemoe::analysis {

double LawCoefficients::predict(double N, double D, double G) const {
  const double param_term = moe ? (g / std::pow(G, gamma) + a) / std::pow(N, alpha) : a / std::pow(N, alpha);
  return c + param_term + b / std::pow(D, beta);
}

std::vector<std::string> LawCoefficients::names() const {
  if (moe) return {"a", "alpha", "b", "beta", "g", "gamma", "c"};
  return {"a", "alpha", "b", "beta", "c"};
}

std::vector<double> LawCoefficients::values() const {
  if (moe) return {a, alpha, b, beta, g, gamma, c};
  return {a, alpha, b, beta, c};
}

LawCoefficients LawCoefficients::from_values(bool is_moe, const std::vector<double>& v) {
  FINEMOE_CHECK(v.size() == (is_moe ? 7u : 5u), "wrong number of coefficients: " << v.size());
  LawCoefficients k;
  k.moe = is_moe;
  k.a = v[0];
  k.alpha = v[1];
  k.b = v[2];
  k.beta = v[3];
  if (is_moe) {
    k.g = v[4];
    k.gamma = v[5];
  }
  k.c = v.back();
  return k;
}

LawPreset law_preset(const std::string& name) {
  const LawCoefficients dense = LawCoefficients::from_values(false, {16.3, 0.126, 26.7, 0.127, 0.47});
  if (name == "table1") {
    return {name, 64, LawCoefficients::from_values(true, {18.1, 0.115, 30.8, 0.147, 2.1, 0.58, 0.47}), dense};
  }
  if (name == "table8") {
    return {name, 16, LawCoefficients::from_values(true, {19.64, 0.124, 57.07, 0.169, 1.18, 0.986, 0.472}),
            dense};
  }
  throw InputError("--preset: '" + name + "' is not a known coefficient preset (table1, table8)");
}

}  // namespace finemoe::analysis
