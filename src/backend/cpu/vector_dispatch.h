#pragma once
// Run-time choice of the AVX2 + FMA paths of the CPU kernels. The build has no -march flag, so
// float kernels compile a second body with FINEMOE_AVX2 and pick it once per process when the CPU
// has both extensions; the portable body stays the fallback (and serves double).
#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__GNUC__) && defined(__x86_64__)
#define FINEMOE_AVX2 __attribute__((target("avx2,fma")))
#else
#define FINEMOE_AVX2
#endif

namespace finemoe::cpu {

inline bool use_avx2() {
#if defined(__GNUC__) && defined(__x86_64__)
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return yes;
#else
  return false;
#endif
}

// exp for x <= 0 (shifted logits and scores), vectorisable: Cephes expf (range reduction by ln 2
// in two parts, degree-6 polynomial, 2^n from the exponent bits); within 2 ulp of expf, 0 below
// -87.3.
inline __attribute__((always_inline)) float exp_nonpositive(float x) {
  const float xc = x < -87.3f ? -87.3f : x;
  const float n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round(x / ln 2)
  float r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return x < -87.3f ? 0.0f : p * scale;
}
inline double exp_nonpositive(double x) { return std::exp(x); }

}  // namespace finemoe::cpu
