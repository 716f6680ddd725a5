// float32 <-> bfloat16 on the host: round to nearest, ties to even, as the GPU's
// __float2bfloat16_rn does (the CUDA backend converts on the device; tests/kernels/bf16_test.cpp
// checks both against a reference). bfloat16 keeps float32's exponent range, so denormals keep
// their top 7 mantissa bits and nothing underflows that float32 holds; values past the largest
// bfloat16 round to infinity; a NaN stays a (quiet) NaN of the same sign.
#pragma once

#include <cstdint>
#include <cstring>

#include "kernels/tensor.h"

namespace tls {

// (memcpy rather than std::bit_cast: CUDA sources include this header too, compiled as C++17.)
inline bfloat16 to_bf16(float x) {
  uint32_t u = 0;
  std::memcpy(&u, &x, sizeof(u));
  if ((u & 0x7fffffffu) > 0x7f800000u) return {static_cast<uint16_t>((u >> 16) | 0x0040u)};
  u += 0x7fffu + ((u >> 16) & 1u);  // a carry into the exponent is the correct rounding
  return {static_cast<uint16_t>(u >> 16)};
}

inline float from_bf16(bfloat16 b) {
  const uint32_t u = static_cast<uint32_t>(b.bits) << 16;
  float x = 0;
  std::memcpy(&x, &u, sizeof(x));
  return x;
}

}  // namespace tls
