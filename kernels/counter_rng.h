// Counter-based random numbers: a value is a pure function of (seed, stream, index), with no
// state to carry, so dropout masks and initial weights are the same for every parallel layout
// (each rank computes the values of the global indices it holds). The mixer is splitmix64's
// finaliser; a stream key folds the seed, step and tensor id in turn.
#pragma once

#include <cmath>
#include <cstdint>
#include <string_view>

namespace tls::rng {

inline constexpr uint64_t kGolden = 0x9e3779b97f4a7c15ULL;

inline uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

inline uint64_t stream_key(uint64_t seed, uint64_t step, uint64_t tensor_id) {
  return mix64(mix64(mix64(seed + kGolden) ^ step) ^ tensor_id);
}

// Uniform in [0, 1) with 53 random bits.
inline double uniform(uint64_t key, uint64_t index) {
  return static_cast<double>(mix64(key + (index + 1) * kGolden) >> 11) * 0x1.0p-53;
}

// Standard normal (Box-Muller on two independent uniforms of the same index).
inline double normal(uint64_t key, uint64_t index) {
  const double u1 = 1.0 - uniform(key, 2 * index);  // (0, 1]
  const double u2 = uniform(key, 2 * index + 1);
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
}

// A stable 64-bit id for a tensor name (FNV-1a), for keys that must not depend on ordering.
inline uint64_t name_id(std::string_view name) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (char c : name) h = (h ^ static_cast<unsigned char>(c)) * 0x100000001b3ULL;
  return h;
}

}  // namespace tls::rng
