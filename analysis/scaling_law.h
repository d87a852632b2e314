#pragma once
// The fine-grained MoE scaling law (Krajewski et al. 2024, Eq. 9) and its dense special case:
//   MoE:   L(N, D, G) = c + (g / G^gamma + a) / N^alpha + b / D^beta
//   dense: L(N, D)    = c + a / N^alpha + b / D^beta
// N: total non-embedding parameters (router excluded), D: training tokens, G: granularity.
#include <string>
#include <vector>

namespace finemoe::analysis {

struct LawCoefficients {
  bool moe = true;  // dense laws have no g, gamma
  double a = 0, alpha = 0, b = 0, beta = 0, g = 0, gamma = 0, c = 0;

  double predict(double N, double D, double G) const;
  // Names and values in the order a, alpha, b, beta, [g, gamma,] c.
  std::vector<std::string> names() const;
  std::vector<double> values() const;
  static LawCoefficients from_values(bool moe, const std::vector<double>& values);
};

// The paper's published fits (paper-facts.md): Table 1 MoE (E = 64) and dense, Table 8 MoE (E = 16).
struct LawPreset {
  std::string name;
  int E;  // expansion rate the MoE law was fitted at (0 for dense)
  LawCoefficients moe;
  LawCoefficients dense;
};
// "table1" or "table8"; InputError naming the allowed presets otherwise.
LawPreset law_preset(const std::string& name);

}  // namespace finemoe::analysis
