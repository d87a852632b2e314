// AdamW and the learning-rate schedule against their textbook definitions, written out here
// independently (torch.optim.AdamW's update; linear warm-up then cosine decay).
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "backend/cpu/adamw.h"
#include "train/lr_schedule.h"

namespace finemoe {
namespace {

TEST(AdamW, MatchesTorchUpdateOverSeveralSteps) {
  const int n = 7;
  std::vector<double> p(n), m(n, 0), v(n, 0), ref_p(n), ref_m(n, 0), ref_v(n, 0);
  for (int i = 0; i < n; ++i) p[i] = ref_p[i] = 0.3 * i - 1.0;
  cpu::AdamWStep s;
  s.lr = 1e-2, s.beta1 = 0.9, s.beta2 = 0.95, s.eps = 1e-8, s.weight_decay = 0.1, s.grad_scale = 0.5;
  for (int t = 1; t <= 5; ++t) {
    std::vector<double> g(n);
    for (int i = 0; i < n; ++i) g[i] = std::sin(1.0 + i * t);
    s.t = t;
    cpu::adamw_update(p.data(), g.data(), m.data(), v.data(), n, s);
    for (int i = 0; i < n; ++i) {  // torch.optim.AdamW, step t
      const double gi = g[i] * s.grad_scale;
      ref_p[i] *= 1 - s.lr * s.weight_decay;
      ref_m[i] = s.beta1 * ref_m[i] + (1 - s.beta1) * gi;
      ref_v[i] = s.beta2 * ref_v[i] + (1 - s.beta2) * gi * gi;
      const double m_hat = ref_m[i] / (1 - std::pow(s.beta1, t));
      const double v_hat = ref_v[i] / (1 - std::pow(s.beta2, t));
      ref_p[i] -= s.lr * m_hat / (std::sqrt(v_hat) + s.eps);
    }
  }
  for (int i = 0; i < n; ++i) {
    EXPECT_NEAR(p[i], ref_p[i], 1e-12 * (1 + std::abs(ref_p[i]))) << i;
    EXPECT_NEAR(m[i], ref_m[i], 1e-14) << i;
    EXPECT_NEAR(v[i], ref_v[i], 1e-14) << i;
  }
}

TEST(AdamW, SumOfSquaresAccumulatesInDouble) {
  std::vector<float> x(1 << 20, 1e-3f);
  EXPECT_NEAR(cpu::sum_of_squares(x.data(), int64_t(x.size())), double(x.size()) * 1e-6 * (1 + 1e-7), 1e-6);
}

TEST(LrSchedule, WarmupThenCosineToFinal) {
  const LrSchedule s(1e-3, 1e-4, 0.1, 100);
  EXPECT_EQ(s.warmup_steps(), 10);
  for (int k = 0; k < 10; ++k) EXPECT_DOUBLE_EQ(s.at(k), 1e-3 * (k + 1) / 10.0);
  EXPECT_DOUBLE_EQ(s.at(10), 1e-3);  // the decay starts at the peak
  EXPECT_DOUBLE_EQ(s.at(99), 1e-4);  // and ends at the final rate
  const double mid = 1e-4 + 0.5 * (1e-3 - 1e-4) * (1 + std::cos(M_PI * (55 - 10) / 89.0));
  EXPECT_DOUBLE_EQ(s.at(55), mid);
  for (int k = 10; k < 99; ++k) EXPECT_GE(s.at(k), s.at(k + 1));
}

TEST(LrSchedule, TinyFractionStillWarmsUpOneStep) {
  const LrSchedule s(2e-4, 2e-5, 0.01, 20);  // 1% of 20 steps rounds to 0: one step instead
  EXPECT_EQ(s.warmup_steps(), 1);
  EXPECT_DOUBLE_EQ(s.at(0), 2e-4);
  EXPECT_EQ(LrSchedule(2e-4, 2e-5, 0.0, 20).warmup_steps(), 0);
}

}  // namespace
}  // namespace finemoe
