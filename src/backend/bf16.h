#pragma once
// bfloat16 storage on the host side: the bit pattern of a __nv_bfloat16 (same size and layout, so a
// DeviceBuffer<Bfloat16> is handed to the kernels as __nv_bfloat16). Conversions round to nearest,
// ties to even, as __float2bfloat16_rn does on the device; infinities stay, and every NaN becomes the
// canonical quiet NaN 0x7fff, as the device's cvt.rn.bf16.f32 (and cuda_bf16.hpp's host path) gives it.
#include <cstdint>
#include <cstring>

namespace finemoe {

struct Bfloat16 {
  uint16_t bits = 0;
};
static_assert(sizeof(Bfloat16) == 2, "Bfloat16 is the 16-bit pattern of __nv_bfloat16");

inline Bfloat16 to_bf16(float x) {
  uint32_t b;
  std::memcpy(&b, &x, sizeof b);
  if ((b & 0x7fffffffu) > 0x7f800000u) return Bfloat16{0x7fffu};  // NaN: the device's canonical NaN
  b += 0x7fffu + ((b >> 16) & 1u);  // may carry into the exponent: rounds up to the next binade or inf
  return Bfloat16{uint16_t(b >> 16)};
}

inline float to_float(Bfloat16 x) {
  const uint32_t b = uint32_t(x.bits) << 16;
  float f;
  std::memcpy(&f, &b, sizeof f);
  return f;
}

// x rounded to the nearest bfloat16 value, as a float.
inline float round_to_bf16(float x) { return to_float(to_bf16(x)); }

}  // namespace finemoe
