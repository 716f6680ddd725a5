// Elementwise ops and reductions of the CUDA backend: x *= alpha, y += alpha x,
// y[i, :] += bias, dbias += sum_i dy[i, :], sum x^2, sum x and the finiteness test.
// Reductions accumulate in double in a fixed order (per-block partials, then one block), so
// results are deterministic; sum_rows uses the two-pass column sum of device_util.cuh.
#include "kernels/cuda/common.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/device_util.cuh"

namespace tls {

using cuda::check_float;
using cuda::dispatch_float;

namespace {

constexpr int kReduceBlocks = 512;

template <class T>
__global__ void scale_kernel(T* x, int64_t n, T a) {
  TLS_GRID_LOOP(i, n) x[i] *= a;
}

template <class T>
__global__ void axpy_kernel(T* y, const T* x, int64_t n, T a) {
  TLS_GRID_LOOP(i, n) y[i] += a * x[i];
}

template <class T>
__global__ void add_bias_kernel(T* y, const T* bias, int64_t n, int64_t cols) {
  TLS_GRID_LOOP(i, n) y[i] += bias[i % cols];
}

// mode 0: sum x, 1: sum x^2, 2: count of non-finite values. partial[blockIdx.x] gets the block's.
template <class T>
__global__ void reduce_partial_kernel(const T* x, int64_t n, int mode, double* partial) {
  double s = 0.0;
  TLS_GRID_LOOP(i, n) {
    const double v = static_cast<double>(x[i]);
    s += mode == 0 ? v : mode == 1 ? v * v : (isfinite(v) ? 0.0 : 1.0);
  }
  s = cuda::block_sum(s);
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

__global__ void reduce_finish_kernel(const double* partial, int n, double* out) {
  double s = 0.0;
  for (int i = threadIdx.x; i < n; i += blockDim.x) s += partial[i];
  s = cuda::block_sum(s);
  if (threadIdx.x == 0) *out = s;
}

template <class T>
struct ColumnOf {
  const T* y;
  int64_t cols;
  __device__ double operator()(int64_t i, int64_t j) const {
    return static_cast<double>(y[i * cols + j]);
  }
};

}  // namespace

void CudaOps::scale(Tensor& x, double alpha) {
  check_float("scale", "x", x);
  activate();
  dispatch_float("scale", x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    if (x.numel() == 0) return;
    scale_kernel<T><<<cuda::blocks_for(x.numel()), cuda::kThreads, 0, stream_>>>(
        x.data<T>(), x.numel(), static_cast<T>(alpha));
    TLS_CUDA_LAUNCHED("scale_kernel");
  });
}

void CudaOps::axpy(double alpha, const Tensor& x, Tensor& y) {
  check_float("axpy", "y", y);
  cuda::check_like("axpy", "y", y, "x", x);
  cuda::check_numel("axpy", "x", x, y.numel());
  activate();
  dispatch_float("axpy", y.dtype(), [&](auto tag) {
    using T = decltype(tag);
    if (y.numel() == 0) return;
    axpy_kernel<T><<<cuda::blocks_for(y.numel()), cuda::kThreads, 0, stream_>>>(
        y.data<T>(), x.data<T>(), y.numel(), static_cast<T>(alpha));
    TLS_CUDA_LAUNCHED("axpy_kernel");
  });
}

void CudaOps::add_bias(Tensor& y, const Tensor& bias) {
  check_float("add_bias", "y", y);
  cuda::check_like("add_bias", "y", y, "bias", bias);
  const int64_t cols = y.matrix_cols();
  cuda::check_numel("add_bias", "bias", bias, cols);
  activate();
  dispatch_float("add_bias", y.dtype(), [&](auto tag) {
    using T = decltype(tag);
    if (y.numel() == 0) return;
    add_bias_kernel<T><<<cuda::blocks_for(y.numel()), cuda::kThreads, 0, stream_>>>(
        y.data<T>(), bias.data<T>(), y.numel(), cols);
    TLS_CUDA_LAUNCHED("add_bias_kernel");
  });
}

void CudaOps::sum_rows(const Tensor& dy, Tensor& dbias) {
  check_float("sum_rows", "dy", dy);
  cuda::check_like("sum_rows", "dy", dy, "dbias", dbias);
  const int64_t rows = dy.matrix_rows(), cols = dy.matrix_cols();
  cuda::check_numel("sum_rows", "dbias", dbias, cols);
  activate();
  Tensor partial = empty({cuda::column_slabs(rows) * cols}, DType::f64);
  dispatch_float("sum_rows", dy.dtype(), [&](auto tag) {
    using T = decltype(tag);
    cuda::column_sum(ColumnOf<T>{dy.data<T>(), cols}, rows, cols, dbias.data<T>(),
                     partial.data<double>(), stream_);
  });
}

namespace {

double reduce(CudaOps& ops, const char* op, const Tensor& x, int mode) {
  check_float(op, "x", x);
  ops.activate();
  Tensor partial = ops.empty({kReduceBlocks + 1}, DType::f64);
  double* p = partial.data<double>();
  const int64_t n = x.numel();
  const int n_blocks = static_cast<int>(std::min<int64_t>(kReduceBlocks, cuda::blocks_for(n)));
  dispatch_float(op, x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    reduce_partial_kernel<T>
        <<<n_blocks, cuda::kThreads, 0, ops.stream()>>>(x.data<T>(), n, mode, p);
    TLS_CUDA_LAUNCHED("reduce_partial_kernel");
  });
  reduce_finish_kernel<<<1, cuda::kThreads, 0, ops.stream()>>>(p, n_blocks, p + kReduceBlocks);
  TLS_CUDA_LAUNCHED("reduce_finish_kernel");
  double out = 0.0;
  TLS_CUDA_CHECK(cudaMemcpyAsync(&out, p + kReduceBlocks, sizeof(double), cudaMemcpyDeviceToHost,
                                 ops.stream()));
  TLS_CUDA_CHECK(cudaStreamSynchronize(ops.stream()));
  return out;
}

}  // namespace

double CudaOps::sum_squares(const Tensor& x) { return reduce(*this, "sum_squares", x, 1); }
double CudaOps::sum(const Tensor& x) { return reduce(*this, "sum", x, 0); }
bool CudaOps::all_finite(const Tensor& x) { return reduce(*this, "all_finite", x, 2) == 0.0; }

}  // namespace tls
