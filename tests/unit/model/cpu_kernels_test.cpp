// CPU kernels against finite differences (float64), naive loops, and float32 vs float64.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "backend/cpu/activation.h"
#include "backend/cpu/attention.h"
#include "backend/cpu/blas.h"
#include "backend/cpu/cross_entropy.h"
#include "backend/cpu/embedding.h"
#include "backend/cpu/layernorm.h"
#include "finite_difference.h"

namespace finemoe::cpu {
namespace {
using test::check_gradient;
using test::dot;
using test::random_vector;

constexpr double kFdTolerance = 1e-6;

std::vector<float> to_float(const std::vector<double>& v) { return std::vector<float>(v.begin(), v.end()); }

TEST(LayerNormKernel, ForwardMatchesDefinition) {
  const int rows = 3, cols = 10;
  auto x = random_vector(rows * cols, 1, -2, 3), w = random_vector(cols, 2), b = random_vector(cols, 3);
  std::vector<double> y(rows * cols), mean(rows), rstd(rows);
  layernorm_forward<double>(y.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), rows, cols, 1e-5);
  for (int r = 0; r < rows; ++r) {
    double m = 0, v = 0;
    for (int i = 0; i < cols; ++i) m += x[r * cols + i] / cols;
    for (int i = 0; i < cols; ++i) v += (x[r * cols + i] - m) * (x[r * cols + i] - m) / cols;
    for (int i = 0; i < cols; ++i)
      EXPECT_NEAR(y[r * cols + i], (x[r * cols + i] - m) / std::sqrt(v + 1e-5) * w[i] + b[i], 1e-12);
  }
}

TEST(LayerNormKernel, GradientMatchesFiniteDifferencesAndAccumulates) {
  const int rows = 4, cols = 7;
  auto x = random_vector(rows * cols, 11, -2, 2), w = random_vector(cols, 12, 0.5, 1.5),
       b = random_vector(cols, 13), probe = random_vector(rows * cols, 14);
  std::vector<double> y(rows * cols), mean(rows), rstd(rows);
  auto loss = [&] {
    layernorm_forward<double>(y.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), rows, cols, 1e-5);
    return dot(probe, y.data());
  };
  loss();
  // Start from a non-zero value to check that backward accumulates.
  const double base = 0.25;
  std::vector<double> dx(rows * cols, base), dw(cols, base), db(cols, base);
  layernorm_backward<double>(dx.data(), dw.data(), db.data(), probe.data(), x.data(), w.data(), mean.data(),
                             rstd.data(), rows, cols);
  for (auto* g : {&dx, &dw, &db})
    for (auto& v : *g) v -= base;
  const auto ex = check_gradient(x.data(), rows * cols, dx.data(), loss);
  const auto ew = check_gradient(w.data(), cols, dw.data(), loss);
  const auto eb = check_gradient(b.data(), cols, db.data(), loss);
  EXPECT_LT(ex.rel_error, kFdTolerance);
  EXPECT_LT(ew.rel_error, kFdTolerance);
  EXPECT_LT(eb.rel_error, kFdTolerance);
  test::record_error("max_rel_error", std::max({ex.rel_error, ew.rel_error, eb.rel_error}));
}

TEST(ActivationKernel, GeluIsTheExactErfForm) {
  const std::vector<double> x = {1.0, -0.5, 0.0, 2.5};
  std::vector<double> y(x.size());
  activation_forward<double>(y.data(), x.data(), 4, Activation::gelu);
  EXPECT_NEAR(y[0], 0.8413447460685429, 1e-15);    // 1 * Phi(1)
  EXPECT_NEAR(y[1], -0.15426876936299344, 1e-15);  // -0.5 * Phi(-0.5)
  EXPECT_EQ(y[2], 0.0);
  EXPECT_NEAR(y[3], 2.5 * 0.9937903346742238, 1e-14);
}

// gelu_tanh against the same function written another way: 0.5 x (1 + tanh(u)) = x / (1 + exp(-2u))
// (tanh u = 2 sigmoid(2u) - 1), evaluated through exp instead of tanh; its exact identity
// f(x) - f(-x) = x; its limits; and its distance to the exact erf GELU (the approximation is
// within 4.8e-4 of it on the whole line, worst near x = -2.7: the bound checked is 1e-3).
TEST(ActivationKernel, GeluTanhIsTheTanhApproximation) {
  auto x = random_vector(2001, 23, -8, 8);
  x.insert(x.end(), {0.0, 1.0, -1.0, 2.5, -2.7, 30.0, -30.0});
  const int64_t n = int64_t(x.size());
  std::vector<double> y(n), y_neg(n), exact(n), minus_x(n);
  for (int64_t i = 0; i < n; ++i) minus_x[i] = -x[i];
  activation_forward<double>(y.data(), x.data(), n, Activation::gelu_tanh);
  activation_forward<double>(y_neg.data(), minus_x.data(), n, Activation::gelu_tanh);
  activation_forward<double>(exact.data(), x.data(), n, Activation::gelu);
  const double c = std::sqrt(2.0 / std::acos(-1.0));
  double worst_form = 0, worst_vs_erf = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double u = c * (x[i] + 0.044715 * x[i] * x[i] * x[i]);
    const double via_exp = x[i] / (1.0 + std::exp(-2.0 * u));
    worst_form = std::max(worst_form, std::abs(y[i] - via_exp) / std::max(1.0, std::abs(via_exp)));
    EXPECT_NEAR(y[i] - y_neg[i], x[i], 1e-13 * std::max(1.0, std::abs(x[i]))) << "x = " << x[i];
    worst_vs_erf = std::max(worst_vs_erf, std::abs(y[i] - exact[i]));
  }
  EXPECT_LT(worst_form, 1e-14);
  EXPECT_LT(worst_vs_erf, 1e-3);
  EXPECT_GT(worst_vs_erf, 1e-5);  // and it is not the erf form
  EXPECT_EQ(y[n - 7], 0.0);       // x = 0
  EXPECT_EQ(y[n - 2], 30.0);      // tanh saturates: f(x) = x for large x ...
  EXPECT_EQ(y[n - 1], -0.0);      // ... and 0 for large -x
  test::record_error("gelu_tanh_vs_exp_form", worst_form);
  test::record_error("gelu_tanh_vs_erf_gelu_abs", worst_vs_erf);
}

// float32 storage against float64 for every activation, forward and backward.
TEST(ActivationKernel, Float32FollowsFloat64) {
  for (Activation a : {Activation::relu, Activation::gelu, Activation::gelu_tanh}) {
    const int n = 4096;
    auto x = random_vector(n, 24, -6, 6), dy = random_vector(n, 25);
    std::vector<double> y(n), dx(n);
    activation_forward<double>(y.data(), x.data(), n, a);
    activation_backward<double>(dx.data(), x.data(), dy.data(), n, a);
    const auto xf = to_float(x), dyf = to_float(dy);
    std::vector<float> yf(n), dxf(n);
    activation_forward<float>(yf.data(), xf.data(), n, a);
    activation_backward<float>(dxf.data(), xf.data(), dyf.data(), n, a);
    EXPECT_LT(test::max_rel_diff(yf.data(), y.data(), n), 1e-6) << activation_name(a);
    EXPECT_LT(test::max_rel_diff(dxf.data(), dx.data(), n), 1e-6) << activation_name(a);
  }
}

TEST(ActivationKernel, ReluForwardAndBackward) {
  const std::vector<double> x = {-1.0, 0.0, 2.0}, dy = {5.0, 6.0, 7.0};
  std::vector<double> y(3), dx(3, 99.0);
  activation_forward<double>(y.data(), x.data(), 3, Activation::relu);
  activation_backward<double>(dx.data(), x.data(), dy.data(), 3, Activation::relu);
  EXPECT_EQ(y, (std::vector<double>{0.0, 0.0, 2.0}));
  EXPECT_EQ(dx, (std::vector<double>{0.0, 0.0, 7.0}));  // overwritten; relu'(0) = 0
}

TEST(ActivationKernel, GradientMatchesFiniteDifferences) {
  for (Activation a : {Activation::relu, Activation::gelu, Activation::gelu_tanh}) {
    const int n = 64;
    auto x = random_vector(n, 21, -3, 3), probe = random_vector(n, 22);
    for (auto& v : x)
      if (std::abs(v) < 1e-2) v = 0.5;  // keep finite differences off relu's kink
    std::vector<double> y(n), dx(n);
    auto loss = [&] {
      activation_forward<double>(y.data(), x.data(), n, a);
      return dot(probe, y.data());
    };
    activation_backward<double>(dx.data(), x.data(), probe.data(), n, a);
    const auto e = check_gradient(x.data(), n, dx.data(), loss);
    EXPECT_LT(e.rel_error, kFdTolerance) << activation_name(a);
    EXPECT_GT(e.max_numeric, 0.1) << activation_name(a);
    test::record_error((std::string(activation_name(a)) + "_max_rel_error").c_str(), e.rel_error);
  }
}

TEST(EmbeddingKernel, ForwardAndGradient) {
  const int vocab = 5, n_seq = 2, context = 4, d = 3;
  const std::vector<int32_t> tokens = {1, 3, 1, 0, 4, 1, 2, 3};  // repeats exercise the scatter-add
  auto wte = random_vector(vocab * d, 31), wpe = random_vector(context * d, 32),
       probe = random_vector(n_seq * context * d, 33);
  std::vector<double> y(n_seq * context * d);
  auto loss = [&] {
    embedding_forward<double>(y.data(), tokens.data(), wte.data(), wpe.data(), n_seq, context, d);
    return dot(probe, y.data());
  };
  loss();
  for (int r = 0; r < n_seq * context; ++r)
    for (int i = 0; i < d; ++i) EXPECT_EQ(y[r * d + i], wte[tokens[r] * d + i] + wpe[(r % context) * d + i]);
  std::vector<double> dwte(vocab * d, 0), dwpe(context * d, 0);
  embedding_backward<double>(dwte.data(), dwpe.data(), probe.data(), tokens.data(), n_seq, context, d);
  const auto et = check_gradient(wte.data(), vocab * d, dwte.data(), loss);
  const auto ep = check_gradient(wpe.data(), context * d, dwpe.data(), loss);
  EXPECT_LT(et.rel_error, kFdTolerance);
  EXPECT_LT(ep.rel_error, kFdTolerance);
  test::record_error("max_rel_error", std::max(et.rel_error, ep.rel_error));
}

// Per sequence and head: softmax over j <= t of q_t . k_j / sqrt(hs), then the weighted sum of v_j.
std::vector<double> naive_attention(const std::vector<double>& qkv, int n_seq, int context, int n_heads, int d) {
  const int hs = d / n_heads;
  std::vector<double> out(n_seq * context * d, 0);
  for (int s = 0; s < n_seq; ++s)
    for (int h = 0; h < n_heads; ++h)
      for (int t = 0; t < context; ++t) {
        auto at = [&](int pos, int which, int i) { return qkv[(s * context + pos) * 3 * d + which * d + h * hs + i]; };
        std::vector<double> w(t + 1);
        double mx = -1e300, sum = 0;
        for (int j = 0; j <= t; ++j) {
          double sc = 0;
          for (int i = 0; i < hs; ++i) sc += at(t, 0, i) * at(j, 1, i);
          w[j] = sc / std::sqrt(double(hs));
          mx = std::max(mx, w[j]);
        }
        for (int j = 0; j <= t; ++j) sum += (w[j] = std::exp(w[j] - mx));
        for (int j = 0; j <= t; ++j)
          for (int i = 0; i < hs; ++i) out[(s * context + t) * d + h * hs + i] += w[j] / sum * at(j, 2, i);
      }
  return out;
}

struct AttentionShape {
  int n_seq = 2, context = 5, n_heads = 2, d = 6;
  int rows() const { return n_seq * context; }
  int att() const { return n_seq * n_heads * context * context; }
};

TEST(AttentionKernel, ForwardMatchesNaiveLoops) {
  const AttentionShape s;
  auto qkv = random_vector(s.rows() * 3 * s.d, 41, -2, 2);
  std::vector<double> out(s.rows() * s.d), att(s.att());
  attention_forward<double>(out.data(), att.data(), qkv.data(), s.n_seq, s.context, s.n_heads, s.d);
  const auto ref = naive_attention(qkv, s.n_seq, s.context, s.n_heads, s.d);
  EXPECT_LT(test::max_rel_diff(out.data(), ref.data(), out.size()), 1e-14);
}

TEST(AttentionKernel, GradientMatchesFiniteDifferences) {
  const AttentionShape s;
  auto qkv = random_vector(s.rows() * 3 * s.d, 42, -2, 2), probe = random_vector(s.rows() * s.d, 43);
  std::vector<double> out(s.rows() * s.d), att(s.att()), datt(s.att()), dqkv(qkv.size(), 7.0);
  auto loss = [&] {
    attention_forward<double>(out.data(), att.data(), qkv.data(), s.n_seq, s.context, s.n_heads, s.d);
    return dot(probe, out.data());
  };
  loss();
  attention_backward<double>(dqkv.data(), datt.data(), probe.data(), qkv.data(), att.data(), s.n_seq, s.context,
                             s.n_heads, s.d);
  const auto e = check_gradient(qkv.data(), qkv.size(), dqkv.data(), loss);
  EXPECT_LT(e.rel_error, kFdTolerance);
  test::record_error("max_rel_error", e.rel_error);
}

TEST(AttentionKernel, IsCausal) {
  const AttentionShape s;
  auto qkv = random_vector(s.rows() * 3 * s.d, 44, -2, 2);
  std::vector<double> out(s.rows() * s.d), out2(out.size()), att(s.att());
  attention_forward<double>(out.data(), att.data(), qkv.data(), s.n_seq, s.context, s.n_heads, s.d);
  const int changed = 3;  // position in sequence 1 whose q, k, v change
  for (int i = 0; i < 3 * s.d; ++i) qkv[(s.context + changed) * 3 * s.d + i] += 0.5;
  attention_forward<double>(out2.data(), att.data(), qkv.data(), s.n_seq, s.context, s.n_heads, s.d);
  for (int r = 0; r < s.rows(); ++r) {
    const bool affected = r >= s.context + changed;
    for (int i = 0; i < s.d; ++i) {
      if (affected)
        EXPECT_NE(out[r * s.d + i], out2[r * s.d + i]) << "row " << r;
      else
        EXPECT_EQ(out[r * s.d + i], out2[r * s.d + i]) << "row " << r;
    }
  }
}

TEST(CrossEntropyKernel, LossAndGradient) {
  const int rows = 5, vocab = 9;
  auto logits = random_vector(rows * vocab, 51, -3, 3);
  const std::vector<int32_t> targets = {0, 8, 3, 3, 5};
  const double dscale = 0.37;
  double ref = 0;
  for (int r = 0; r < rows; ++r) {
    double sum = 0;
    for (int i = 0; i < vocab; ++i) sum += std::exp(logits[r * vocab + i]);
    ref += std::log(sum) - logits[r * vocab + targets[r]];
  }
  std::vector<double> dlogits(rows * vocab);
  const double loss = softmax_cross_entropy<double>(dlogits.data(), logits.data(), targets.data(), rows, vocab, dscale);
  EXPECT_NEAR(loss, ref, 1e-12);
  auto f = [&] { return dscale * softmax_cross_entropy<double>(nullptr, logits.data(), targets.data(), rows, vocab, 1.0); };
  const auto e = check_gradient(logits.data(), logits.size(), dlogits.data(), f);
  EXPECT_LT(e.rel_error, kFdTolerance);
  test::record_error("max_rel_error", e.rel_error);
  // In place (dlogits aliasing logits) gives the same loss and gradient.
  std::vector<double> inplace = logits;
  EXPECT_EQ(softmax_cross_entropy<double>(inplace.data(), inplace.data(), targets.data(), rows, vocab, dscale), loss);
  EXPECT_EQ(inplace, dlogits);
}

TEST(CpuKernels, Float32AgreesWithFloat64) {
  const AttentionShape s;
  const int cols = s.d;
  auto x = random_vector(s.rows() * cols, 61, -2, 2), w = random_vector(cols, 62), b = random_vector(cols, 63);
  std::vector<double> y(x.size()), mean(s.rows()), rstd(s.rows());
  layernorm_forward<double>(y.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), s.rows(), cols, 1e-5);
  auto xf = to_float(x), wf = to_float(w), bf = to_float(b);
  std::vector<float> yf(x.size()), meanf(s.rows()), rstdf(s.rows());
  layernorm_forward<float>(yf.data(), meanf.data(), rstdf.data(), xf.data(), wf.data(), bf.data(), s.rows(), cols, 1e-5f);
  EXPECT_LT(test::max_rel_diff(yf.data(), y.data(), y.size()), 1e-6);

  auto qkv = random_vector(s.rows() * 3 * s.d, 64, -2, 2), probe = random_vector(s.rows() * s.d, 65);
  std::vector<double> out(s.rows() * s.d), att(s.att()), datt(s.att()), dqkv(qkv.size());
  attention_forward<double>(out.data(), att.data(), qkv.data(), s.n_seq, s.context, s.n_heads, s.d);
  attention_backward<double>(dqkv.data(), datt.data(), probe.data(), qkv.data(), att.data(), s.n_seq, s.context,
                             s.n_heads, s.d);
  auto qkvf = to_float(qkv), probef = to_float(probe);
  std::vector<float> outf(out.size()), attf(att.size()), dattf(att.size()), dqkvf(qkv.size());
  attention_forward<float>(outf.data(), attf.data(), qkvf.data(), s.n_seq, s.context, s.n_heads, s.d);
  attention_backward<float>(dqkvf.data(), dattf.data(), probef.data(), qkvf.data(), attf.data(), s.n_seq, s.context,
                            s.n_heads, s.d);
  EXPECT_LT(test::max_rel_diff(outf.data(), out.data(), out.size()), 1e-6);
  EXPECT_LT(test::max_rel_diff(dqkvf.data(), dqkv.data(), dqkv.size()), 1e-5);
}

TEST(GemmFlopCounter, CountsTwoMnkByCategory) {
  reset_gemm_flops();
  std::vector<double> a(3 * 4, 1.0), b(4 * 5, 1.0), c(3 * 5);
  gemm<double>(false, false, 3, 5, 4, 1.0, a.data(), 4, b.data(), 5, 0.0, c.data(), 5);
  EXPECT_EQ(c[0], 4.0);
  {
    FlopScope outer(FlopCategory::ffn);
    gemm<double>(false, false, 3, 5, 4, 1.0, a.data(), 4, b.data(), 5, 0.0, c.data(), 5);
    {
      FlopScope inner(FlopCategory::router);
      gemm<double>(true, false, 4, 5, 3, 1.0, a.data(), 4, c.data(), 5, 0.0, b.data(), 5);
    }
    gemm<double>(false, false, 3, 5, 4, 1.0, a.data(), 4, b.data(), 5, 0.0, c.data(), 5);
  }
  const GemmFlops f = gemm_flops();
  EXPECT_EQ(f[FlopCategory::other], 2 * 3 * 5 * 4);
  EXPECT_EQ(f[FlopCategory::ffn], 2 * 2 * 3 * 5 * 4);
  EXPECT_EQ(f[FlopCategory::router], 2 * 4 * 5 * 3);
  EXPECT_EQ(f.total(), 4 * 2 * 60);
  reset_gemm_flops();
  EXPECT_EQ(gemm_flops().total(), 0);
}

}  // namespace
}  // namespace finemoe::cpu
