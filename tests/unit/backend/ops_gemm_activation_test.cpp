// ops::gemm_activation and its backward on the CPU (the reference of the CUDA backend's cuBLASLt
// epilogue): bit for bit the separate ops the layers call (ops::gemm or ops::grouped_gemm, then
// ops::activation_*), over transposes, batches, padded and strided layouts and both GEMM input
// modes; and against a float64 triple loop with the activations written out here and their
// derivatives taken by central differences. Runs in well under a second.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "backend/compute.h"
#include "backend/ops.h"

namespace finemoe {
namespace {

using cpu::Activation;
constexpr Activation kActivations[] = {Activation::relu, Activation::gelu, Activation::gelu_tanh};

template <typename T>
std::vector<T> random_values(size_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<double> u(-1.5, 1.5);
  std::vector<T> v(n);
  for (T& x : v) x = T(u(gen));
  return v;
}

// A strided batch of row-major products and its C-side layout.
struct Shape {
  bool ta, tb;
  int m, n, k, batch;
  int pad_ld;       // extra columns of every leading dimension
  int64_t pad_batch;  // extra elements between batch members
  int lda() const { return (ta ? m : k) + pad_ld; }
  int ldb() const { return (tb ? k : n) + pad_ld; }
  int ldc() const { return n + pad_ld; }
  int64_t stride_a() const { return int64_t(ta ? k : m) * lda() + pad_batch; }
  int64_t stride_b() const { return int64_t(tb ? n : k) * ldb() + pad_batch; }
  int64_t stride_c() const { return int64_t(m) * ldc() + pad_batch; }
};

std::vector<Shape> shapes() {
  std::vector<Shape> out;
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      out.push_back({ta, tb, 7, 9, 5, 1, 0, 0});   // one packed product
      out.push_back({ta, tb, 6, 10, 4, 3, 0, 0});  // packed batch: one activation run
      out.push_back({ta, tb, 5, 8, 6, 3, 3, 7});   // padded rows and batch gaps: runs per row
    }
  return out;
}

// The separate ops, as the layers call them.
template <typename T>
void separate(const Shape& s, const T* A, const T* B, T* C) {
  if (s.batch == 1) {
    ops::gemm<T>(s.ta, s.tb, s.m, s.n, s.k, T(1), A, s.lda(), B, s.ldb(), T(0), C, s.ldc());
    return;
  }
  std::vector<ops::GemmProblem<T>> p;
  for (int i = 0; i < s.batch; ++i)
    p.push_back({s.m, s.n, s.k, A + i * s.stride_a(), s.lda(), B + i * s.stride_b(), s.ldb(), C + i * s.stride_c(),
                 s.ldc()});
  ops::grouped_gemm<T>(s.ta, s.tb, T(1), p, T(0));
}

template <typename T>
void expect_bit_equal_to_separate_ops() {
  for (GemmInputs inputs : {GemmInputs::full, GemmInputs::bf16}) {
    ComputeSettings cs;
    cs.gemm_inputs = inputs;
    configure_compute(cs);
    for (const Shape& s : shapes()) {
      for (Activation a : kActivations) {
        const auto A = random_values<T>(size_t(s.stride_a()) * s.batch, 1);
        const auto B = random_values<T>(size_t(s.stride_b()) * s.batch, 2);
        const auto dout = random_values<T>(size_t(s.stride_c()) * s.batch, 3);
        const size_t nc = size_t(s.stride_c()) * s.batch;
        // Gaps poisoned with a value that must survive.
        std::vector<T> pre(nc, T(7)), out(nc, T(7)), ref_pre(nc, T(7)), ref_out(nc, T(7));
        ops::gemm_activation<T>(s.ta, s.tb, s.m, s.n, s.k, A.data(), s.lda(), s.stride_a(), B.data(), s.ldb(),
                                s.stride_b(), pre.data(), out.data(), s.ldc(), s.stride_c(), s.batch, a);
        EXPECT_EQ(ops::last_gemm_activation_path(), "cpu");
        separate(s, A.data(), B.data(), ref_pre.data());
        for (int b = 0; b < s.batch; ++b)
          for (int r = 0; r < s.m; ++r) {
            const int64_t o = b * s.stride_c() + int64_t(r) * s.ldc();
            ops::activation_forward<T>(ref_out.data() + o, ref_pre.data() + o, s.n, a);
          }
        const std::string what = std::string(cpu::activation_name(a)) + " ta " + std::to_string(s.ta) + " tb " +
                                 std::to_string(s.tb) + " batch " + std::to_string(s.batch) + " pad " +
                                 std::to_string(s.pad_ld) + (inputs == GemmInputs::bf16 ? " bf16 inputs" : "");
        EXPECT_EQ(std::memcmp(pre.data(), ref_pre.data(), nc * sizeof(T)), 0) << "pre: " << what;
        EXPECT_EQ(std::memcmp(out.data(), ref_out.data(), nc * sizeof(T)), 0) << "out: " << what;

        // Backward: dpre = (op(A) op(B)) * act'(pre), here with the forward's pre and a random product.
        std::vector<T> dpre(nc, T(7)), ref_dpre(nc, T(7));
        ops::gemm_activation_backward<T>(s.ta, s.tb, s.m, s.n, s.k, A.data(), s.lda(), s.stride_a(), B.data(),
                                         s.ldb(), s.stride_b(), pre.data(), dpre.data(), s.ldc(), s.stride_c(),
                                         s.batch, a);
        separate(s, A.data(), B.data(), ref_dpre.data());
        for (int b = 0; b < s.batch; ++b)
          for (int r = 0; r < s.m; ++r) {
            const int64_t o = b * s.stride_c() + int64_t(r) * s.ldc();
            ops::activation_backward<T>(ref_dpre.data() + o, pre.data() + o, ref_dpre.data() + o, s.n, a);
          }
        EXPECT_EQ(std::memcmp(dpre.data(), ref_dpre.data(), nc * sizeof(T)), 0) << "dpre: " << what;
      }
    }
  }
  configure_compute(ComputeSettings{});
}

TEST(GemmActivation, EqualsTheSeparateOpsBitForBitFloat) { expect_bit_equal_to_separate_ops<float>(); }
TEST(GemmActivation, EqualsTheSeparateOpsBitForBitDouble) { expect_bit_equal_to_separate_ops<double>(); }

// The activations written out independently of backend/cpu/activation.cpp.
double act(Activation a, double x) {
  switch (a) {
    case Activation::relu: return x > 0 ? x : 0;
    case Activation::gelu: return 0.5 * x * std::erfc(-x / std::sqrt(2.0));
    case Activation::gelu_tanh:
      return x / (1 + std::exp(-2 * std::sqrt(2 / M_PI) * (x + 0.044715 * x * x * x)));
  }
  return 0;
}

TEST(GemmActivation, MatchesFloat64LoopsAndFiniteDifferences) {
  for (const Shape& s : shapes()) {
    for (Activation a : kActivations) {
      const auto A = random_values<double>(size_t(s.stride_a()) * s.batch, 4);
      const auto B = random_values<double>(size_t(s.stride_b()) * s.batch, 5);
      const size_t nc = size_t(s.stride_c()) * s.batch;
      std::vector<double> pre(nc, 0), out(nc, 0), dpre(nc, 0);
      ops::gemm_activation<double>(s.ta, s.tb, s.m, s.n, s.k, A.data(), s.lda(), s.stride_a(), B.data(), s.ldb(),
                                   s.stride_b(), pre.data(), out.data(), s.ldc(), s.stride_c(), s.batch, a);
      // Backward from the forward's pre: dpre = h * act'(h).
      ops::gemm_activation_backward<double>(s.ta, s.tb, s.m, s.n, s.k, A.data(), s.lda(), s.stride_a(), B.data(),
                                            s.ldb(), s.stride_b(), pre.data(), dpre.data(), s.ldc(), s.stride_c(),
                                            s.batch, a);
      double worst = 0, worst_d = 0;
      for (int b = 0; b < s.batch; ++b)
        for (int i = 0; i < s.m; ++i)
          for (int j = 0; j < s.n; ++j) {
            double h = 0;
            for (int l = 0; l < s.k; ++l) {
              const double x = s.ta ? A[b * s.stride_a() + int64_t(l) * s.lda() + i]
                                    : A[b * s.stride_a() + int64_t(i) * s.lda() + l];
              const double y = s.tb ? B[b * s.stride_b() + int64_t(j) * s.ldb() + l]
                                    : B[b * s.stride_b() + int64_t(l) * s.ldb() + j];
              h += x * y;
            }
            const int64_t o = b * s.stride_c() + int64_t(i) * s.ldc() + j;
            const double step = 1e-6;
            const double slope = a == Activation::relu ? (h > 0 ? 1.0 : 0.0)
                                                       : (act(a, h + step) - act(a, h - step)) / (2 * step);
            worst = std::max({worst, std::abs(pre[o] - h), std::abs(out[o] - act(a, h))});
            worst_d = std::max(worst_d, std::abs(dpre[o] - h * slope));
          }
      EXPECT_LT(worst, 1e-13) << cpu::activation_name(a);
      EXPECT_LT(worst_d, 1e-8) << cpu::activation_name(a);  // the central difference's own error
    }
  }
}

TEST(GemmActivation, RefusesToOverwriteThePreActivation) {
  std::vector<double> A(4, 1.0), B(4, 1.0), C(4, 0.0), D(4, 0.0);
  EXPECT_ANY_THROW(ops::gemm_activation<double>(false, false, 2, 2, 2, A.data(), 2, 0, B.data(), 2, 0, C.data(),
                                                C.data(), 2, 0, 1, Activation::gelu_tanh));
  EXPECT_ANY_THROW(ops::gemm_activation_backward<double>(false, false, 2, 2, 2, A.data(), 2, 0, B.data(), 2, 0,
                                                         C.data(), C.data(), 2, 0, 1, Activation::gelu_tanh));
  EXPECT_ANY_THROW(ops::gemm_activation<double>(false, false, 2, 3, 2, A.data(), 2, 0, B.data(), 2, 0, C.data(),
                                                D.data(), 2, 0, 1, Activation::relu));  // ldc < n
}

}  // namespace
}  // namespace finemoe
