// Dropout of the CUDA backend: x *= keep / (1 - p), keep = [u >= p] with u in [0, 1) the
// counter-based uniform of kernels/counter_rng.h: u = (mix64(key + (index + 1) * golden) >> 11)
// * 2^-53 with key = stream_key(seed, step, tensor_id) (computed on the host by the same
// function), index the element's global index of DropoutKey. Same bits as the CPU, so the
// masks are equal on every backend and layout.
#include "kernels/counter_rng.h"
#include "kernels/cuda/common.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/device_util.cuh"

namespace tls {

namespace {

__device__ inline uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

__device__ inline double uniform(uint64_t key, uint64_t index) {
  return static_cast<double>(mix64(key + (index + 1) * 0x9e3779b97f4a7c15ULL) >> 11) * 0x1.0p-53;
}

struct DropoutLayout {
  int64_t cols, t_local, t_global, t_offset, b_offset, cols_global, col_offset;
};

template <class T>
__global__ void dropout_kernel(T* x, int64_t n, DropoutLayout l, uint64_t key, double p, T s) {
  TLS_GRID_LOOP(k, n) {
    const int64_t i = k / l.cols, j = k % l.cols;
    const int64_t b = i / l.t_local, t = i % l.t_local;
    const int64_t g =
        ((b + l.b_offset) * l.t_global + t + l.t_offset) * l.cols_global + l.col_offset + j;
    x[k] = uniform(key, static_cast<uint64_t>(g)) >= p ? x[k] * s : T(0);
  }
}

}  // namespace

void CudaOps::dropout_apply(Tensor& x, double p, const DropoutKey& key) {
  const char* op = "dropout_apply";
  cuda::check_float(op, "x", x);
  if (!(p >= 0.0 && p <= 1.0))
    cuda::fail(op, "probability " + std::to_string(p) + " not in [0, 1]");
  if (p == 0.0) return;
  const int64_t rows = x.matrix_rows(), cols = x.matrix_cols();
  if (key.t_local <= 0 || rows % key.t_local != 0 || key.t_offset < 0 || key.b_offset < 0 ||
      key.t_offset + key.t_local > key.t_global || key.col_offset < 0 ||
      (key.cols_global > 0 && key.col_offset + cols > key.cols_global))
    cuda::fail(op, "layout t_local " + std::to_string(key.t_local) + ", t_global " +
                       std::to_string(key.t_global) + ", t_offset " + std::to_string(key.t_offset) +
                       ", b_offset " + std::to_string(key.b_offset) + " does not fit " +
                       cuda::describe("x", x));
  if (p == 1.0) {
    fill(x, 0.0);
    return;
  }
  const int64_t n = x.numel();
  if (n == 0) return;
  activate();
  const DropoutLayout layout{cols,          key.t_local,
                             key.t_global,  key.t_offset,
                             key.b_offset,  key.cols_global > 0 ? key.cols_global : cols,
                             key.col_offset};
  const uint64_t k = rng::stream_key(key.seed, key.step, key.tensor_id);
  cuda::dispatch_float(op, x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    dropout_kernel<T><<<cuda::blocks_for(n), cuda::kThreads, 0, stream_>>>(
        x.data<T>(), n, layout, k, p, static_cast<T>(1.0 / (1.0 - p)));
    TLS_CUDA_LAUNCHED("dropout_kernel");
  });
}

}  // namespace tls
