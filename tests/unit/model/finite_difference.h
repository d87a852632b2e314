#pragma once
// Central finite differences for gradient checks in float64.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

namespace finemoe::test {

struct FdResult {
  double rel_error = 0;   // max |analytic - numeric| / max |numeric|
  double max_numeric = 0;  // scale of the gradient (so a test can see it is not trivially zero)
};

// Perturbs each of the n values at p by +-h, evaluates loss() and compares the central difference
// with analytic[i]. p is restored.
template <typename F>
FdResult check_gradient(double* p, int64_t n, const double* analytic, F&& loss, double h = 1e-5) {
  double max_diff = 0, max_num = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double keep = p[i];
    p[i] = keep + h;
    const double up = loss();
    p[i] = keep - h;
    const double down = loss();
    p[i] = keep;
    const double numeric = (up - down) / (2 * h);
    max_diff = std::max(max_diff, std::abs(numeric - analytic[i]));
    max_num = std::max(max_num, std::abs(numeric));
  }
  return {max_num > 0 ? max_diff / max_num : max_diff, max_num};
}

// Records a measured error in the test's XML output (--gtest_output=xml), in scientific notation.
inline void record_error(const char* key, double value) {
  char text[32];
  std::snprintf(text, sizeof text, "%.3e", value);
  ::testing::Test::RecordProperty(key, text);
}

inline std::vector<double> random_vector(size_t n, uint64_t seed, double lo = -1, double hi = 1) {
  std::mt19937_64 gen(seed);
  std::uniform_real_distribution<double> u(lo, hi);
  std::vector<double> v(n);
  for (auto& x : v) x = u(gen);
  return v;
}

inline double dot(const std::vector<double>& a, const double* b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// Largest |a - b| over largest |b|.
template <typename A, typename B>
double max_rel_diff(const A* a, const B* b, int64_t n) {
  double diff = 0, scale = 0;
  for (int64_t i = 0; i < n; ++i) {
    diff = std::max(diff, std::abs(static_cast<double>(a[i]) - static_cast<double>(b[i])));
    scale = std::max(scale, std::abs(static_cast<double>(b[i])));
  }
  return scale > 0 ? diff / scale : diff;
}

}  // namespace finemoe::test
