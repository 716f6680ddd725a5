// A plain reference for float32 -> bfloat16 rounding (round to nearest, ties to even), written
// from the definition rather than from bit tricks, and the float32 test values the conversion
// tests run it on: ties of both parities, denormals, the overflow edge, infinities and NaNs.
#pragma once

#include <bit>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

namespace tls::testing {

// The bfloat16 value of the top 16 bits `hi`, in double; the infinity pattern counts as 2^128,
// the first value past the largest bfloat16, so that rounding to it is a plain nearest choice.
inline double bf16_value_unbounded(uint32_t hi) {
  const double sign = (hi & 0x8000u) ? -1.0 : 1.0;
  if ((hi & 0x7fffu) == 0x7f80u) return sign * std::ldexp(1.0, 128);
  return static_cast<double>(std::bit_cast<float>(hi << 16));
}

// The bfloat16 bits of x: the nearer of the two bfloat16 values around x (by magnitude, in
// exact double arithmetic), the one with an even last bit on a tie.
inline uint16_t reference_bf16_bits(float x) {
  if (std::isnan(x)) return 0x7fc0u;  // callers compare NaNs by isnan only
  const uint32_t u = std::bit_cast<uint32_t>(x);
  const uint32_t down = u >> 16;
  if ((u & 0xffffu) == 0 || std::isinf(x)) return static_cast<uint16_t>(down);
  const uint32_t up = down + 1;  // next bfloat16 away from zero (infinity past the largest)
  const double v = static_cast<double>(x);
  const double to_down = std::abs(v - bf16_value_unbounded(down));
  const double to_up = std::abs(bf16_value_unbounded(up) - v);
  if (to_down < to_up) return static_cast<uint16_t>(down);
  if (to_up < to_down) return static_cast<uint16_t>(up);
  return static_cast<uint16_t>((down & 1u) ? up : down);
}

// Edge cases and random bit patterns over every exponent.
inline std::vector<float> bf16_test_values() {
  std::vector<uint32_t> bits = {
      0x00000000u, 0x80000000u,  // +-0
      0x3f800000u, 0x3f808000u,  // 1, and the tie above it (even: stays 1)
      0x3f818000u,               // tie above an odd bfloat16 (rounds up to even)
      0x3f807fffu, 0x3f808001u,  // just below and above a tie
      0xbf818000u,               // negative tie
      0x00000001u, 0x80000001u,  // smallest denormals (round to zero)
      0x00008000u, 0x00018000u,  // denormal ties, even and odd
      0x0000ffffu,               // rounds up to the smallest bfloat16 denormal
      0x007fffffu,               // the largest denormal rounds up to the smallest normal
      0x00800000u,               // smallest normal
      0x7f7f0000u, 0x7f7f7fffu,  // the largest bfloat16 and just below its rounding edge
      0x7f7f8000u, 0x7f7fffffu,  // its tie (odd: overflows to infinity), the largest float
      0xff7f8000u,               // negative overflow
      0x7f800000u, 0xff800000u,  // infinities
      0x7fc00000u, 0xffc00001u,  // quiet NaNs
      0x7f800001u, 0x7fbfffffu,  // signalling NaNs whose top 16 bits look like infinity or 0x7fbf
  };
  std::mt19937 gen(12345);
  for (int i = 0; i < 4000; ++i) bits.push_back(gen());
  std::vector<float> out;
  for (uint32_t b : bits) out.push_back(std::bit_cast<float>(b));
  return out;
}

}  // namespace tls::testing
