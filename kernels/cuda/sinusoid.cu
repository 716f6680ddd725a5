// Sinusoidal positional encoding of the CUDA backend, in the tensor's own precision T:
// inv_j = 1 / 10000^(2j / d), out[i, j] = sin(pos_i inv_j), out[i, d/2 + j] = cos(pos_i inv_j).
// The frequencies are computed on the host with the CPU backend's exact expression and copied
// over, so the angles pos_i * inv_j are bit-identical to the CPU's (a one-ulp difference in
// inv_j would move sin at position 1e5 by ~1e-3).
#include <cmath>

#include "kernels/cuda/common.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/device_util.cuh"

namespace tls {

namespace {

template <class T>
__global__ void sinusoid_kernel(T* out, const T* pos, const T* inv, int64_t rows, int64_t half) {
  TLS_GRID_LOOP(k, rows * half) {
    const int64_t i = k / half, j = k % half;
    const T a = pos[i] * inv[j];
    out[i * 2 * half + j] = sin(a);
    out[i * 2 * half + half + j] = cos(a);
  }
}

}  // namespace

void CudaOps::sinusoid_forward(Tensor& out, const std::vector<double>& positions) {
  const char* op = "sinusoid_forward";
  cuda::check_float(op, "out", out);
  const int64_t rows = out.matrix_rows(), d = out.matrix_cols();
  if (rows != static_cast<int64_t>(positions.size()) || d % 2 != 0)
    cuda::fail(op, std::to_string(positions.size()) + " positions for " +
                       cuda::describe("out", out) + " (want one row per position, an even width)");
  const int64_t half = d / 2;
  if (rows * half == 0) return;
  activate();
  cuda::dispatch_float(op, out.dtype(), [&](auto tag) {
    using T = decltype(tag);
    std::vector<double> inv(static_cast<size_t>(half));
    for (int64_t j = 0; j < half; ++j)
      inv[j] =
          static_cast<double>(T(1) / std::pow(T(10000), static_cast<T>(2 * j) / static_cast<T>(d)));
    // Round the positions to T on the host too (from_host converts through T exactly).
    Tensor pos_d = empty({rows}, out.dtype()), inv_d = empty({half}, out.dtype());
    from_host(pos_d, positions);
    from_host(inv_d, inv);
    sinusoid_kernel<T><<<cuda::blocks_for(rows * half), cuda::kThreads, 0, stream_>>>(
        out.data<T>(), pos_d.data<T>(), inv_d.data<T>(), rows, half);
    TLS_CUDA_LAUNCHED("sinusoid_kernel");
  });
}

}  // namespace tls
