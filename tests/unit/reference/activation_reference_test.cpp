// The FFN activations against PyTorch (tests/reference/activation_reference.h5, written by
// activation_reference.py: F.relu, F.gelu with approximate 'none' and 'tanh', derivatives by
// autograd, float64, 1014 points in [-10, 10] and at the bends): cpu::activation_* in float64 and
// float32. Runs in milliseconds.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <iostream>
#include <string>
#include <vector>

#include "backend/cpu/activation.h"
#include "io/h5.h"

#ifndef FINEMOE_ACTIVATION_REFERENCE
#error "FINEMOE_ACTIVATION_REFERENCE (path of tests/reference/activation_reference.h5) must be defined"
#endif

namespace finemoe {
namespace {

using cpu::Activation;

// max |got - ref| / max |ref|.
template <typename T>
double relative_max_error(const std::vector<T>& got, const std::vector<double>& ref) {
  double diff = 0, scale = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    diff = std::max(diff, std::abs(double(got[i]) - ref[i]));
    scale = std::max(scale, std::abs(ref[i]));
  }
  return diff / scale;
}

TEST(ActivationReference, MatchesPyTorch) {
  h5::silence_library_errors();
  const h5::File file = h5::File::open(FINEMOE_ACTIVATION_REFERENCE, false);
  std::cout << "reference from PyTorch " << file.get_string("torch_version") << "\n";
  const std::vector<double> x = file.open_series("x").read_double();
  ASSERT_GT(x.size(), 1000u);
  const int64_t n = int64_t(x.size());
  const std::vector<double> ones(x.size(), 1.0);
  const std::vector<float> xf(x.begin(), x.end()), onesf(x.size(), 1.0f);
  for (Activation a : {Activation::relu, Activation::gelu, Activation::gelu_tanh}) {
    const std::string name = cpu::activation_name(a);
    const h5::Group g = file.open_group(name);
    const std::vector<double> y_ref = g.open_series("y").read_double(), d_ref = g.open_series("dy_dx").read_double();
    ASSERT_EQ(y_ref.size(), x.size());
    ASSERT_EQ(d_ref.size(), x.size());
    std::vector<double> y(x.size()), d(x.size());
    cpu::activation_forward<double>(y.data(), x.data(), n, a);
    cpu::activation_backward<double>(d.data(), x.data(), ones.data(), n, a);
    EXPECT_LT(relative_max_error(y, y_ref), 1e-14) << name;
    EXPECT_LT(relative_max_error(d, d_ref), 1e-14) << name;
    std::vector<float> yf(x.size()), df(x.size());
    cpu::activation_forward<float>(yf.data(), xf.data(), n, a);
    cpu::activation_backward<float>(df.data(), xf.data(), onesf.data(), n, a);
    // float32 where the input keeps its sign (+-1e-300 round to 0, where relu' is 0, not 1).
    std::vector<float> yk, dk;
    std::vector<double> y_refk, d_refk;
    for (size_t i = 0; i < x.size(); ++i)
      if ((xf[i] == 0.0f) == (x[i] == 0.0)) {
        yk.push_back(yf[i]);
        dk.push_back(df[i]);
        y_refk.push_back(y_ref[i]);
        d_refk.push_back(d_ref[i]);
      }
    EXPECT_LT(relative_max_error(yk, y_refk), 1e-6) << name << " (float32)";
    EXPECT_LT(relative_max_error(dk, d_refk), 1e-6) << name << " (float32)";
    std::cout << name << ": float64 forward " << relative_max_error(y, y_ref) << ", derivative "
              << relative_max_error(d, d_ref) << "; float32 " << relative_max_error(yk, y_refk) << ", "
              << relative_max_error(dk, d_refk) << "\n";
  }
}

}  // namespace
}  // namespace finemoe
