// train.precision = bf16 on the CPU: GEMM inputs rounded to bfloat16 with fp32 accumulation, the
// arithmetic of the GPU's bf16 runs (backend/compute.h), so that the precision setting can be checked
// where there is no GPU.
//   Bf16GemmRoundsInputs: ops::gemm equals a float64 product of the inputs rounded to bf16 by an
//     independent rounding (frexp / nearbyint, ties to even), and differs from the unrounded one.
//   Bf16FollowsFp32: 200 training steps with bf16 GEMM inputs and bf16 activation storage (what
//     train.precision = bf16 sets) follow the fp32 loss curve within 1% (20-step means), the
//     criterion the GPU test (tests/gpu/model_gpu_test) applies on the device.
//   Bf16StorageRoundsKeptActivations: a kept activation comes back as the independently rounded
//     bf16 value of what the forward wrote (ties to even included) and costs 2 bytes a value.
//   Bf16StorageGradientsFollowFloat64: step-1 gradients with bf16 activation storage (fp32 GEMM
//     inputs, so the forward and its routing are the fp32 path's: storage rounding only reaches
//     the backward) against the float64 path within the bf16 tolerance, and different from the
//     fp32 path's (the storage rounding points are live).
// Runtime about 2 s in all.
#include <gtest/gtest.h>

#include <cfenv>
#include <random>

#include <cstring>

#include "backend/kept_activation.h"
#include "backend/ops.h"
#include "training_harness.h"

namespace finemoe {
namespace {

using namespace test;

void use_gemm_inputs(GemmInputs inputs, ActivationStorage storage = ActivationStorage::full) {
  ComputeSettings s;
  s.gemm_inputs = inputs;
  s.activation_storage = storage;
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
  use_gemm_inputs(GemmInputs::bf16, ActivationStorage::bf16);
  const Trained<float> bf16 = train<float>(cfg, MPI_COMM_SELF, 1, data, c.steps);
  use_gemm_inputs(GemmInputs::full);
  EXPECT_NE(bf16.loss, fp32.loss) << "bf16 inputs changed nothing";
  ASSERT_LT(fp32.loss.back(), 0.8 * fp32.loss.front()) << "the model must learn for the comparison to mean much";
  const double worst = moving_average_gap(bf16.loss, fp32.loss, 20);
  EXPECT_LE(worst, 0.01);
  std::printf("  CPU bf16 vs fp32, 200 steps: loss %.4f -> %.4f vs %.4f -> %.4f, worst 20-step mean gap %.3f%%\n",
              bf16.loss.front(), bf16.loss.back(), fp32.loss.front(), fp32.loss.back(), 100 * worst);
}

TEST(Precision, Bf16StorageRoundsKeptActivations) {
  ASSERT_EQ(std::fegetround(), FE_TONEAREST);
  const size_t n = 4096;
  std::mt19937 gen(5);
  std::uniform_real_distribution<float> dist(-3, 3);
  std::vector<float> values(n);
  for (float& x : values) x = dist(gen);
  // Exact ties between two bf16 values (low 16 bits 0x8000), both parities of the kept bit.
  for (size_t i = 0; i < 64; ++i) {
    uint32_t bits;
    std::memcpy(&bits, &values[i], sizeof bits);
    bits = (bits & 0xffff0000u) | 0x8000u;
    std::memcpy(&values[i], &bits, sizeof bits);
  }
  for (const ActivationStorage storage : {ActivationStorage::full, ActivationStorage::bf16}) {
    use_gemm_inputs(GemmInputs::full, storage);
    DeviceBuffer<float> working;
    KeptActivation<float> kept;
    const int64_t before = buffer_memory_use().live_bytes;
    float* w = kept.forward_buffer(n, working);
    copy_to_device(w, values.data(), n);
    kept.keep();
    const int64_t used = buffer_memory_use().live_bytes - before;
    ops::fill_zero(working.data(), int64_t(working.size()));  // the next block reuses the working buffer
    std::vector<float> back(n);
    copy_to_host(back.data(), kept.restore(working), n);
    size_t mismatches = 0, changed = 0;
    for (size_t i = 0; i < n; ++i) {
      const double want = storage == ActivationStorage::bf16 ? bf16_reference(values[i]) : double(values[i]);
      mismatches += double(back[i]) != want;
      changed += back[i] != values[i];
    }
    EXPECT_EQ(mismatches, 0u) << (storage == ActivationStorage::bf16 ? "bf16" : "full");
    if (storage == ActivationStorage::bf16) {
      EXPECT_GT(changed, n / 2) << "the values were not rounded";
      EXPECT_EQ(used, int64_t(n) * (4 + 2)) << "an fp32 working buffer and 2 bytes a kept value";
    } else {
      EXPECT_EQ(changed, 0u);
      EXPECT_EQ(used, int64_t(n) * 4) << "the kept tensor is the forward's buffer";
    }
  }
  use_gemm_inputs(GemmInputs::full);
}

TEST(Precision, Bf16StorageGradientsFollowFloat64) {
  Corpus corpus;
  for (const char* routing : {"expert_choice", "token_choice"}) {
    Case c;
    c.routing = routing;
    c.batch = 8;
    const Config cfg64 = make_config(c, "fp64");
    Config cfg16 = make_config(c, "bf16");
    BatchSampler data(corpus.data(), kContext, cfg64.train.seed, kTrainStream);
    use_gemm_inputs(GemmInputs::full);
    const Trained<double> ref = train<double>(cfg64, MPI_COMM_SELF, 1, data, 0);
    const Trained<float> fp32 = train<float>(make_config(c, "fp32"), MPI_COMM_SELF, 1, data, 0);
    use_gemm_inputs(GemmInputs::full, ActivationStorage::bf16);
    const Trained<float> stored = train<float>(cfg16, MPI_COMM_SELF, 1, data, 0);
    use_gemm_inputs(GemmInputs::full);
    ASSERT_EQ(stored.routed, ref.routed) << routing << ": the comparison needs the same routing";
    double worst = 0, moved = 0;
    std::string worst_name;
    for (size_t i = 0; i < ref.specs.size(); ++i) {
      const ParamSpec& s = ref.specs[i];
      const int g = int(s.group);
      const int64_t off = ref.offsets[i];
      std::vector<double> got(stored.grads[g].begin() + off, stored.grads[g].begin() + off + s.numel());
      std::vector<double> without(fp32.grads[g].begin() + off, fp32.grads[g].begin() + off + s.numel());
      const double d = rel_norm(got.data(), ref.grads[g].data() + off, s.numel());
      if (d > worst) {
        worst = d;
        worst_name = s.name;
      }
      moved = std::max(moved, rel_norm(got.data(), without.data(), s.numel()));
    }
    // bf16 keeps 8 significant bits (relative rounding <= 2^-9); a few roundings in sequence,
    // norm-wise over a tensor: 2e-2.
    EXPECT_LE(worst, 2e-2) << routing << ": " << worst_name;
    EXPECT_GT(moved, 1e-4) << routing << ": storing activations in bf16 changed no gradient";
    std::printf("  %s: bf16 storage step-1 gradients vs float64: worst %.2e (%s); vs fp32 storage %.2e\n",
                routing, worst, worst_name.c_str(), moved);
  }
}

}  // namespace
}  // namespace finemoe
