// Router: softmax probabilities and the z-loss against finite differences in float64.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "model/moe/router.h"
#include "model/moe/routing_ops.h"
#include "moe_test_support.h"

namespace finemoe {
namespace {

constexpr int kRows = 6, kD = 5, kE = 7;

// J = sum R * probs + zscale * sum lse^2.
double objective(const std::vector<double>& x, const std::vector<double>& w, const std::vector<double>& r,
                 double zscale) {
  std::vector<double> logits(kRows * kE), probs(kRows * kE), dz(kRows * kE);
  moe::router_forward<double>(x.data(), w.data(), kRows, kD, kE, logits.data(), probs.data());
  double j = 0;  // += zscale * sum lse^2
  moe::routing::router_z_loss(logits.data(), probs.data(), kRows, kE, zscale, dz.data(), &j);
  for (size_t i = 0; i < probs.size(); ++i) j += r[i] * probs[i];
  return j;
}

TEST(MoeRouter, ProbabilitiesSumToOne) {
  const auto x = test::random_values<double>(kRows * kD, 1);
  const auto w = test::random_values<double>(kD * kE, 2);
  std::vector<double> logits(kRows * kE), probs(kRows * kE);
  moe::router_forward<double>(x.data(), w.data(), kRows, kD, kE, logits.data(), probs.data());
  for (int t = 0; t < kRows; ++t) {
    double s = 0;
    for (int e = 0; e < kE; ++e) s += probs[t * kE + e];
    EXPECT_NEAR(s, 1.0, 1e-14);
  }
}

TEST(MoeRouter, GradientsMatchFiniteDifferencesWithZLoss) {
  auto x = test::random_values<double>(kRows * kD, 1);
  auto w = test::random_values<double>(kD * kE, 2);
  const auto r = test::random_values<double>(kRows * kE, 3);
  const double zscale = 0.3;
  std::vector<double> logits(kRows * kE), probs(kRows * kE), dlogits(kRows * kE);
  moe::router_forward<double>(x.data(), w.data(), kRows, kD, kE, logits.data(), probs.data());
  double z = 0;
  moe::routing::router_z_loss(logits.data(), probs.data(), kRows, kE, zscale, dlogits.data(), &z);
  std::vector<double> dx(kRows * kD, 0.0), dw(kD * kE, 0.0);
  moe::router_backward<double>(x.data(), w.data(), probs.data(), r.data(), dlogits.data(), kRows, kD, kE, dx.data(),
                       dw.data());
  const double h = 1e-6;
  auto check = [&](std::vector<double>& v, const std::vector<double>& grad, const char* what) {
    for (size_t i = 0; i < v.size(); ++i) {
      const double keep = v[i];
      v[i] = keep + h;
      const double up = objective(x, w, r, zscale);
      v[i] = keep - h;
      const double down = objective(x, w, r, zscale);
      v[i] = keep;
      EXPECT_NEAR(grad[i], (up - down) / (2 * h), 1e-8) << what << "[" << i << "]";
    }
  };
  check(x, dx, "dx");
  check(w, dw, "dw");
}

}  // namespace
}  // namespace finemoe
