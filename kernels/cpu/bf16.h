// bfloat16 rounding on the CPU: a float32 with the low 16 mantissa bits rounded away (to nearest,
// ties to even, kernels/bf16.h), held in a float. The CPU backend's --precision bf16 GEMMs round
// their operands this way, as the GPU's conversion (__float2bfloat16_rn) does before a bf16
// tensor-core GEMM.
#pragma once

#include "kernels/bf16.h"

namespace tls::cpu {

inline float round_to_bf16(float x) { return from_bf16(to_bf16(x)); }

}  // namespace tls::cpu
