#pragma once
// Shared by the GPU tests: skip without a device, random inputs, comparisons with the CPU reference.
#include <cuda_bf16.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "backend/cuda/device.h"
#include "backend/cuda/device_buffer.h"

namespace finemoe::gpu_test {

using bf16 = __nv_bfloat16;

// Every GPU test derives from this: without a device the test is skipped with a message that
// ctest matches (SKIP_REGULAR_EXPRESSION) to report it as skipped.
class GpuTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (cuda::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device: skipped";
  }
};

inline std::vector<float> random_vector(size_t n, uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = dist(gen);
  return v;
}

inline std::vector<int32_t> random_ints(size_t n, int32_t bound, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int32_t> dist(0, bound - 1);
  std::vector<int32_t> v(n);
  for (int32_t& x : v) x = dist(gen);
  return v;
}

inline std::vector<bf16> to_bf16(const std::vector<float>& v) {
  std::vector<bf16> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = __float2bfloat16_rn(v[i]);
  return out;
}

inline std::vector<float> to_float(const std::vector<bf16>& v) {
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = __bfloat162float(v[i]);
  return out;
}

// Values representable in bf16 (so that the CPU reference sees exactly the GPU's inputs).
inline std::vector<float> round_to_bf16(const std::vector<float>& v) { return to_float(to_bf16(v)); }

// max |got - ref| / max |ref|, the fp32 criterion (<= 1e-5).
inline double relative_max_error(const std::vector<float>& got, const std::vector<float>& ref) {
  EXPECT_EQ(got.size(), ref.size());
  double diff = 0, scale = 0;
  for (size_t i = 0; i < std::min(got.size(), ref.size()); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    diff = std::max(diff, std::abs(double(got[i]) - double(ref[i])));
    scale = std::max(scale, std::abs(double(ref[i])));
  }
  return scale > 0 ? diff / scale : diff;
}

// bf16 outputs: each element within bf16 rounding of the fp32 reference (2^-8 relative, which is
// twice the round-to-nearest bound) plus 1e-5 of the largest reference for the fp32 math.
inline void expect_bf16_close(const std::vector<bf16>& got, const std::vector<float>& ref) {
  ASSERT_EQ(got.size(), ref.size());
  double scale = 0;
  for (float r : ref) scale = std::max(scale, std::abs(double(r)));
  int bad = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double g = __bfloat162float(got[i]);
    const double tol = std::ldexp(std::abs(double(ref[i])), -8) + 1e-5 * scale;
    if (!(std::abs(g - ref[i]) <= tol) && bad++ < 5)
      ADD_FAILURE() << "element " << i << ": got " << g << ", reference " << ref[i] << ", tolerance " << tol;
  }
  EXPECT_EQ(bad, 0);
}

constexpr double kFp32Tolerance = 1e-5;

template <typename T>
cuda::DeviceBuffer<T> on_device(const std::vector<T>& host) {
  return cuda::DeviceBuffer<T>(host);
}

}  // namespace finemoe::gpu_test
