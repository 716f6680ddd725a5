// bfloat16 rounding on the CPU: a float32 with the low 16 mantissa bits rounded away (to nearest,
// ties to even), held in a float. The CPU backend's --precision bf16 GEMMs round their operands
// this way, as the GPU's conversion (__float2bfloat16_rn) does before a bf16 tensor-core GEMM.
#pragma once

#include <bit>
#include <cstdint>

namespace tls::cpu {

inline float round_to_bf16(float x) {
  uint32_t u = std::bit_cast<uint32_t>(x);
  if ((u & 0x7fffffffu) > 0x7f800000u) return x;  // NaN stays NaN
  u += 0x7fffu + ((u >> 16) & 1u);                // overflow past the largest bf16 gives inf
  return std::bit_cast<float>(u & 0xffff0000u);
}

}  // namespace tls::cpu
