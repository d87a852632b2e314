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
//     fp32 path's (the storage rounding points are live); both routings and the dense FFN.
//   Bf16OperandsReadTheStoredCopy: with bf16 operands a product reads an operand's bf16 copy
//     where one is given (here deliberately not the values' rounding, so the reads show), packs the
//     values of one without it, and a grouped product refuses an operand without it.
//   Bf16OperandsEqualRoundingInsideProducts: training with bf16 operands (the weights' bf16 copy,
//     kept activations read in bf16, gradients packed once: the pointers the GPU's native bf16
//     products read) gives the same bits as rounding fp32 inputs inside each product: losses,
//     step-1 gradients and final parameters, for expert and token choice, SwiGLU with a shared
//     expert and two micro-batches, and the dense FFN. A stale or misplaced copy would change the bits.
// Runtime about 3 s in all.
#include <gtest/gtest.h>

#include <cfenv>
#include <random>

#include <cstring>

#include "backend/kept_activation.h"
#include "util/check.h"
#include "backend/ops.h"
#include "training_harness.h"

namespace finemoe {
namespace {

using namespace test;

void use_gemm_inputs(GemmInputs inputs, ActivationStorage storage = ActivationStorage::full,
                     bool bf16_operands = false) {
  ComputeSettings s;
  s.gemm_inputs = inputs;
  s.activation_storage = storage;
  s.bf16_operands = bf16_operands;
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
  for (const char* routing : {"expert_choice", "token_choice", "dense"}) {
    Case c;
    const bool dense = std::string(routing) == "dense";  // the dense FFN's kept input and pre-activation
    if (!dense) c.routing = routing;
    c.batch = 8;
    Config cfg64 = make_config(c, "fp64");
    Config cfg16 = make_config(c, "bf16");
    Config cfg32 = make_config(c, "fp32");
    for (Config* cfg : {&cfg64, &cfg16, &cfg32}) cfg->moe.enabled = !dense;
    BatchSampler data(corpus.data(), kContext, cfg64.train.seed, kTrainStream);
    use_gemm_inputs(GemmInputs::full);
    const Trained<double> ref = train<double>(cfg64, MPI_COMM_SELF, 1, data, 0);
    const Trained<float> fp32 = train<float>(cfg32, MPI_COMM_SELF, 1, data, 0);
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

TEST(Precision, Bf16OperandsReadTheStoredCopy) {
  const int m = 6, n = 5, k = 9;
  std::mt19937 gen(11);
  std::uniform_real_distribution<float> dist(-2, 2);
  std::vector<float> a(m * k), b(k * n);
  for (float& x : a) x = dist(gen);
  for (float& x : b) x = dist(gen);
  // A "copy" that is not the rounding of a: twice it, so a product that read it shows.
  std::vector<Bfloat16> a_copy(a.size()), b_copy(b.size());
  std::vector<float> a_twice(a.size());
  for (size_t i = 0; i < a.size(); ++i) {
    a_copy[i] = to_bf16(2 * a[i]);
    a_twice[i] = to_float(a_copy[i]);
  }
  for (size_t i = 0; i < b.size(); ++i) b_copy[i] = to_bf16(b[i]);
  auto product = [&](const std::vector<float>& left) {
    std::vector<double> c(m * n, 0.0);
    for (int i = 0; i < m; ++i)
      for (int j = 0; j < n; ++j)
        for (int p = 0; p < k; ++p) c[i * n + j] += bf16_reference(left[i * k + p]) * bf16_reference(b[p * n + j]);
    return c;
  };
  const std::vector<double> from_values = product(a), from_copy = product(a_twice);
  auto worst_gap = [&](const std::vector<float>& got, const std::vector<double>& want) {
    double worst = 0;
    for (size_t i = 0; i < got.size(); ++i) worst = std::max(worst, std::abs(got[i] - want[i]));
    return worst;
  };
  std::vector<float> c(m * n);
  for (const bool operands : {false, true}) {
    use_gemm_inputs(GemmInputs::bf16, ActivationStorage::bf16, operands);
    // B: its values only (packed on the fly with bf16 operands), or its copy alone.
    ops::gemm<float>(false, false, m, n, k, 1.0f, ops::Operand<float>(a.data(), a_copy.data()), k,
                     operands ? ops::Operand<float>(nullptr, b_copy.data()) : ops::Operand<float>(b.data()), n, 0.0f,
                     c.data(), n);
    EXPECT_LE(worst_gap(c, operands ? from_copy : from_values), 2e-5) << (operands ? "copy" : "values");
    EXPECT_GE(worst_gap(c, operands ? from_values : from_copy), 1e-1) << "the other operand was read";
  }
  // Grouped: every operand needs its copy (the GPU's grouped call takes one type).
  std::vector<ops::GemmProblem<float>> problems{{m, n, k, {a.data(), a_copy.data()}, k, {b.data()}, n, c.data(), n}};
  EXPECT_THROW(ops::grouped_gemm<float>(false, false, 1.0f, problems, 0.0f), RuntimeFailure);
  problems[0].B.rounded = b_copy.data();
  ops::grouped_gemm<float>(false, false, 1.0f, problems, 0.0f);
  EXPECT_LE(worst_gap(c, from_copy), 2e-5);
  use_gemm_inputs(GemmInputs::full);
}

TEST(Precision, Bf16OperandsEqualRoundingInsideProducts) {
  Corpus corpus;
  std::vector<Case> cases(4);
  cases[0].name = "expert choice, relu";
  cases[1].name = "token choice, gelu";
  cases[1].routing = "token_choice";
  cases[1].activation = "gelu";
  cases[2].name = "token choice, swiglu, shared expert, 2 micro-batches";
  cases[2].routing = "token_choice";
  cases[2].activation = "swiglu";
  cases[2].shared_experts = 1;
  cases[2].micro = 8;
  cases[3].name = "dense FFN, gelu";
  cases[3].activation = "gelu";
  for (Case& c : cases) {
    c.steps = 4;
    Config cfg = make_config(c, "bf16");
    cfg.moe.enabled = c.name.rfind("dense", 0) != 0;
    BatchSampler data(corpus.data(), kContext, cfg.train.seed, kTrainStream);
    use_gemm_inputs(GemmInputs::bf16, ActivationStorage::bf16, false);
    const Trained<float> inside = train<float>(cfg, MPI_COMM_SELF, 1, data, c.steps);
    use_gemm_inputs(GemmInputs::bf16, ActivationStorage::bf16, true);
    const Trained<float> stored = train<float>(cfg, MPI_COMM_SELF, 1, data, c.steps);
    use_gemm_inputs(GemmInputs::full);
    ASSERT_EQ(stored.loss.size(), size_t(c.steps)) << c.name;
    EXPECT_EQ(stored.loss, inside.loss) << c.name;
    EXPECT_LT(stored.loss.back(), stored.loss.front()) << c.name << ": the steps must move the weights";
    for (int g = 0; g < 2; ++g) {
      EXPECT_EQ(stored.grads[g], inside.grads[g]) << c.name << ": step-1 gradients, group " << g;
      EXPECT_EQ(stored.values[g], inside.values[g]) << c.name << ": parameters after the steps, group " << g;
    }
    std::printf("  %s: %d steps, loss %.6f -> %.6f with and without bf16 operands\n", c.name.c_str(), c.steps,
                stored.loss.front(), stored.loss.back());
  }
}

}  // namespace
}  // namespace finemoe
