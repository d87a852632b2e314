#include "joint_law.h"

#include <cmath>

#include "util/check.h"

namespace finemoe::analysis {

double ExpertTransform::operator()(double E) const {
  const double inv_max = std::isfinite(e_max) ? 1 / e_max : 0;
  return 1 / (1 / (E - 1 + 1 / (1 / e_start - inv_max)) + inv_max);
}

double JointLaw::predict(double N_active, double D, double E, double G) const {
  const double e_hat = transform(E), ln_e = std::log(e_hat);
  const double prefactor = fine_grained ? a + g * std::pow(G, -kappa) : a;
  return prefactor * std::pow(e_hat, delta) * std::pow(N_active, alpha + gamma * ln_e) +
         b * std::pow(e_hat, omega) * std::pow(D, beta + zeta * ln_e) + c;
}

std::vector<std::string> JointLaw::names() const {
  if (fine_grained) return {"a", "delta", "alpha", "gamma", "b", "omega", "beta", "zeta", "g", "kappa", "c"};
  return {"a", "delta", "alpha", "gamma", "b", "omega", "beta", "zeta", "c"};
}

std::vector<double> JointLaw::values() const {
  if (fine_grained) return {a, delta, alpha, gamma, b, omega, beta, zeta, g, kappa, c};
  return {a, delta, alpha, gamma, b, omega, beta, zeta, c};
}

JointLaw JointLaw::from_values(bool fine_grained, const std::vector<double>& v, ExpertTransform transform) {
  FINEMOE_CHECK(v.size() == (fine_grained ? 11u : 9u), "wrong number of joint-law coefficients: " << v.size());
  JointLaw k;
  k.fine_grained = fine_grained;
  k.a = v[0], k.delta = v[1], k.alpha = v[2], k.gamma = v[3];
  k.b = v[4], k.omega = v[5], k.beta = v[6], k.zeta = v[7];
  if (fine_grained) k.g = v[8], k.kappa = v[9];
  k.c = v.back();
  k.transform = transform;
  return k;
}

JointPreset joint_preset(const std::string& name) {
  if (name == "joint-secondary") {
    // As quoted by https://occupying-mars.notion.site/MOE-scaling-laws-1990c7abb6a680cc8084d25d79650cdc
    // (a secondary source; the paper's own table could not be read here): 35.91 Ê^0.2285
    // N^(0.1889 - 0.0098 ln Ê) + 35.98 Ê^-0.5529 D^(0.1775 + 0.0259 ln Ê) + 1.3637. Printed so, the
    // loss would grow with N and D: the leading minus of each exponent is read as lost, giving
    // alpha = -0.1889, gamma = -0.0098, beta = -0.1775, zeta = +0.0259. Ê = E (transform constants
    // not found). Unverified: see docs/analysis.md before relying on it.
    return {name,
            "secondary source (occupying-mars.notion.site, quoting arXiv 2502.05172), signs of alpha, beta read as "
            "negative, Ê = E; unverified against the paper",
            JointLaw::from_values(false, {35.91, 0.2285, -0.1889, -0.0098, 35.98, -0.5529, -0.1775, 0.0259, 1.3637})};
  }
  throw InputError("--coefficients: '" + name + "' is not a known joint-law preset (joint-secondary)");
}

}  // namespace finemoe::analysis
