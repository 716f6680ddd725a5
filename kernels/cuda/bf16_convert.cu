// float32 -> bfloat16 rounding for the bf16 GEMMs, a grid-stride loop.
#include "kernels/cuda/bf16_convert.h"
#include "kernels/cuda/common.h"
#include "kernels/cuda/device_util.cuh"

namespace tls::cuda {
namespace {

__global__ void to_bf16_kernel(__nv_bfloat16* dst, const float* src, int64_t n) {
  TLS_GRID_LOOP(i, n) dst[i] = __float2bfloat16_rn(src[i]);
}

}  // namespace

void convert_to_bf16(__nv_bfloat16* dst, const float* src, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  to_bf16_kernel<<<blocks_for(n), kThreads, 0, stream>>>(dst, src, n);
  TLS_CUDA_LAUNCHED("to_bf16_kernel");
}

}  // namespace tls::cuda
