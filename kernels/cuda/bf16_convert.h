// float32 -> bfloat16 conversion of GEMM operands for the --precision bf16 GEMMs (gemm.cpp).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace tls::cuda {

// dst[i] = src[i] rounded to bfloat16 (to nearest, ties to even: kernels/cpu/bf16.h is the same
// rounding), queued on `stream`.
void convert_to_bf16(__nv_bfloat16* dst, const float* src, int64_t n, cudaStream_t stream);

}  // namespace tls::cuda
