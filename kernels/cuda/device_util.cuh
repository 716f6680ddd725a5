// Device-side helpers of the CUDA kernels: grid-stride loops, a block-wide sum in double, and
// a two-pass column reduction [rows, cols] -> [cols] used by sum_rows and the LayerNorm
// parameter gradients (partial sums per row slab in double, then one pass that adds them to
// the output, so the result does not depend on scheduling).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/common.h"

namespace tls::cuda {

#define TLS_GRID_LOOP(i, n)                                                              \
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); \
       i += static_cast<int64_t>(blockDim.x) * gridDim.x)

// Sum of v over the block (blockDim.x a multiple of 32, at most 1024); every thread gets it.
__device__ inline double block_sum(double v) {
  __shared__ double warp_sums[32];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, n_warps = blockDim.x / 32;
  __syncthreads();  // warp_sums may still be read by a previous call
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  double s = 0.0;
  for (int w = 0; w < n_warps; ++w) s += warp_sums[w];
  return s;
}

// Row kernels: one warp per row, kRowsPerBlock warps per block. TLS_WARP_ROW declares the row
// index i and the lane, and returns from warps past the last row.
constexpr int kRowsPerBlock = 8;

inline unsigned row_blocks(int64_t rows) {
  return static_cast<unsigned>(std::max<int64_t>(1, (rows + kRowsPerBlock - 1) / kRowsPerBlock));
}

#define TLS_WARP_ROW(i, rows)                                                           \
  const int64_t i =                                                                     \
      static_cast<int64_t>(blockIdx.x) * ::tls::cuda::kRowsPerBlock + threadIdx.x / 32; \
  const int lane = threadIdx.x % 32;                                                    \
  if (i >= (rows)) return;

__device__ inline double warp_sum(double v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Column sums of f(i, j) over rows i: partial[slab, j] for slabs of kColSlab rows. Grid:
// (n_slabs, ceil(cols / 32)), block 32 x 8: threads of a warp read consecutive columns. The
// slabs go on grid.x, whose limit is 2^31 - 1 (grid.y stops at 65535, i.e. 16.7 M rows).
constexpr int kColSlab = 256;

template <class F>
__global__ void column_partial_kernel(F f, int64_t rows, int64_t cols, double* partial) {
  __shared__ double acc[8][33];
  const int64_t j = static_cast<int64_t>(blockIdx.y) * 32 + threadIdx.x;
  const int64_t i0 = static_cast<int64_t>(blockIdx.x) * kColSlab;
  const int64_t i1 = i0 + kColSlab < rows ? i0 + kColSlab : rows;
  double s = 0.0;
  if (j < cols)
    for (int64_t i = i0 + threadIdx.y; i < i1; i += 8) s += f(i, j);
  acc[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && j < cols) {
    for (int y = 1; y < 8; ++y) s += acc[y][threadIdx.x];
    partial[static_cast<int64_t>(blockIdx.x) * cols + j] = s;
  }
}

template <class T>
__global__ void column_finish_kernel(const double* partial, int64_t n_slabs, int64_t cols, T* out) {
  TLS_GRID_LOOP(j, cols) {
    double s = 0.0;
    for (int64_t k = 0; k < n_slabs; ++k) s += partial[k * cols + j];
    out[j] += static_cast<T>(s);
  }
}

// out[j] += sum_i f(i, j); partial is a device buffer of at least column_slabs(rows) * cols.
inline int64_t column_slabs(int64_t rows) {
  return rows == 0 ? 1 : (rows + kColSlab - 1) / kColSlab;
}

template <class T, class F>
void column_sum(F f, int64_t rows, int64_t cols, T* out, double* partial, cudaStream_t stream) {
  if (cols == 0) return;
  const int64_t slabs = column_slabs(rows);
  if ((cols + 31) / 32 > 65535) fail("column_sum", "more than 2,097,120 columns");
  const dim3 grid(static_cast<unsigned>(slabs), static_cast<unsigned>((cols + 31) / 32));
  column_partial_kernel<<<grid, dim3(32, 8), 0, stream>>>(f, rows, cols, partial);
  TLS_CUDA_LAUNCHED("column_partial_kernel");
  column_finish_kernel<T><<<blocks_for(cols), kThreads, 0, stream>>>(partial, slabs, cols, out);
  TLS_CUDA_LAUNCHED("column_finish_kernel");
}

}  // namespace tls::cuda
