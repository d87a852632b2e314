#pragma once
// The joint MoE law in the number of experts (Ludziejewski et al. 2025, arXiv 2502.05172), in its
// published form and extended with the fine-grained term of Krajewski et al. 2024 (Eq. 9):
//   joint:          L = a Ê^delta N^(alpha + gamma ln Ê) + b Ê^omega D^(beta + zeta ln Ê) + c
//   fine-grained:   L = (a + g G^-kappa) Ê^delta N^(alpha + gamma ln Ê) + b Ê^omega D^(beta + zeta ln Ê) + c
// N = N_active = 12 d_model^2 n_blocks (non-embedding active parameters), D = tokens, E = finemoe's
// expansion rate (total over dense FFN parameters; a dense model is E = 1), G = granularity.
// alpha and beta are negative in this (the paper's) way of writing the law. Ê is a saturating
// transform of E (ExpertTransform). docs/analysis.md, "The joint law in E", says what is verified.
#include <limits>
#include <string>
#include <vector>

namespace finemoe::analysis {

// Ê(E) = 1 / (1 / (E - 1 + 1 / (1/E_start - 1/E_max)) + 1/E_max): Ê(1) = E_start and Ê -> E_max
// as E grows (the form of Clark et al. 2022). E_start = 1, E_max = inf is the identity Ê = E.
// The constants are fixed, not fitted.
struct ExpertTransform {
  double e_start = 1;
  double e_max = std::numeric_limits<double>::infinity();
  double operator()(double E) const;
};

struct JointLaw {
  bool fine_grained = false;  // with (a + g G^-kappa); else g = kappa = 0 and G is ignored
  double a = 0, delta = 0, alpha = 0, gamma = 0, b = 0, omega = 0, beta = 0, zeta = 0, g = 0, kappa = 0, c = 0;
  ExpertTransform transform;

  double predict(double N_active, double D, double E, double G) const;
  // a delta alpha gamma b omega beta zeta [g kappa] c
  std::vector<std::string> names() const;
  std::vector<double> values() const;
  static JointLaw from_values(bool fine_grained, const std::vector<double>& values, ExpertTransform transform = {});
  std::size_t size() const { return fine_grained ? 11 : 9; }
};

struct JointPreset {
  std::string name;
  std::string provenance;  // where the numbers come from and what is not verified
  JointLaw law;
};
// "joint-secondary": the coefficients as a secondary source quotes them (docs/analysis.md);
// InputError naming the allowed presets otherwise.
JointPreset joint_preset(const std::string& name);

}  // namespace finemoe::analysis
