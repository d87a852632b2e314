// train.precision = bf16 on the CPU: GEMM inputs rounded to bfloat16 with fp32 accumulation, the
// arithmetic of the GPU's bf16 runs (backend/compute.h), so that the precision setting can be checked
// where there is no GPU.
//   Bf16GemmRoundsInputs: ops::gemm equals a float64 product of the inputs rounded to bf16 by an
//     independent rounding (frexp / nearbyint, ties to even), and differs from the unrounded one.
//   Bf16FollowsFp32: 200 training steps follow the fp32 loss curve within 1% (20-step means), the
//     criterion the GPU test (tests/gpu/model_gpu_test) applies on the device.
#include <gtest/gtest.h>

#include <cfenv>
#include <random>

#include "backend/ops.h"
#include "training_harness.h"

namespace finemoe {
namespace {

using namespace test;

void use_gemm_inputs(GemmInputs inputs) {
  ComputeSettings s;
  s.gemm_inputs = inputs;
  configure_compute(s);
}

// Nearest bfloat16 (8 significant bits), ties to even.
double bf16_reference(float x) {
  int e = 0;
  const double m = std::frexp(double(x), &e);  // x = m 2^e, 0.5 <= |m| < 1
  return std::ldexp(std::nearbyint(std::ldexp(m, 8)), e - 8);
}

TEST(Precision, Bf16GemmRoundsInputs) {
  ASSERT_EQ(std::fegetround(), FE_TONEAREST);
  const int m = 7, n = 5, k = 33;
  std::mt19937 gen(3);
  std::uniform_real_distribution<float> dist(-2, 2);
  std::vector<float> a(m * k), b(k * n), c(m * n);
  for (float& x : a) x = dist(gen);
  for (float& x : b) x = dist(gen);
  use_gemm_inputs(GemmInputs::bf16);
  ops::gemm<float>(false, false, m, n, k, 1.0f, a.data(), k, b.data(), n, 0.0f, c.data(), n);
  use_gemm_inputs(GemmInputs::full);
  double worst_rounded = 0, min_unrounded = 1e300, max_unrounded = 0;
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < n; ++j) {
      double rounded = 0, exact = 0;
      for (int p = 0; p < k; ++p) {
        rounded += bf16_reference(a[i * k + p]) * bf16_reference(b[p * n + j]);
        exact += double(a[i * k + p]) * double(b[p * n + j]);
      }
      worst_rounded = std::max(worst_rounded, std::abs(c[i * n + j] - rounded));
      min_unrounded = std::min(min_unrounded, std::abs(c[i * n + j] - exact));
      max_unrounded = std::max(max_unrounded, std::abs(c[i * n + j] - exact));
    }
  EXPECT_LE(worst_rounded, 2e-5) << "fp32 accumulation of bf16-rounded inputs";
  EXPECT_GE(max_unrounded, 1e-3) << "the inputs were not rounded";
}

TEST(Precision, Bf16FollowsFp32) {
  Corpus corpus;
  Case c;
  c.name = "bf16";
  c.steps = 200;
  c.batch = 64;  // per-step losses noisy enough to hide the comparison need a larger batch
  const Config cfg = make_config(c, "fp32");
  BatchSampler data(corpus.data(), kContext, cfg.train.seed, kTrainStream);
  use_gemm_inputs(GemmInputs::full);
  const Trained<float> fp32 = train<float>(cfg, MPI_COMM_SELF, 1, data, c.steps);
  use_gemm_inputs(GemmInputs::bf16);
  const Trained<float> bf16 = train<float>(cfg, MPI_COMM_SELF, 1, data, c.steps);
  use_gemm_inputs(GemmInputs::full);
  EXPECT_NE(bf16.loss, fp32.loss) << "bf16 inputs changed nothing";
  ASSERT_LT(fp32.loss.back(), 0.8 * fp32.loss.front()) << "the model must learn for the comparison to mean much";
  const double worst = moving_average_gap(bf16.loss, fp32.loss, 20);
  EXPECT_LE(worst, 0.01);
  std::printf("  CPU bf16 vs fp32, 200 steps: loss %.4f -> %.4f vs %.4f -> %.4f, worst 20-step mean gap %.3f%%\n",
              bf16.loss.front(), bf16.loss.back(), fp32.loss.front(), fp32.loss.back(), 100 * worst);
}

}  // namespace
}  // namespace finemoe
