#pragma once
// Counter-based random numbers: every draw is a pure function of (seed, stream key, index), so
// initialisation and data order do not depend on how many ranks run or in what order they draw.
#include <cmath>
#include <cstdint>
#include <string_view>

namespace finemoe {

inline uint64_t mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

inline uint64_t hash_combine(uint64_t a, uint64_t b) { return mix64(a ^ mix64(b)); }

// FNV-1a, for turning a parameter name into a stream key.
inline uint64_t hash_string(std::string_view s) {
  uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ULL;
  return mix64(h);
}

// Uniform in (0, 1), never 0 so it is safe for log().
inline double uniform_open(uint64_t key, uint64_t index) {
  return (static_cast<double>(hash_combine(key, index) >> 11) + 0.5) * 0x1.0p-53;
}

// Standard normal truncated to [-2, 2] (the usual truncated-normal init), by rejection over
// successive counters; deterministic for a given (key, index).
inline double truncated_normal(uint64_t key, uint64_t index) {
  constexpr double kTwoPi = 6.283185307179586;
  for (uint64_t attempt = 0;; ++attempt) {
    const uint64_t k = hash_combine(key, attempt);
    const double u1 = uniform_open(k, 2 * index);
    const double u2 = uniform_open(k, 2 * index + 1);
    const double z = std::sqrt(-2.0 * std::log(u1)) * std::cos(kTwoPi * u2);
    if (z >= -2.0 && z <= 2.0) return z;
  }
}

}  // namespace finemoe
