// Softmax family of the CUDA backend, per row (one warp per row; max-shifted, exponentials and
// sums in double as the CPU reference does):
// softmax: y = exp(x - max) / sum exp(x - max); backward dx += y (dout - sum(dout y)).
// log_softmax: y = x - max - log sum exp(x - max); nll: loss_i = -y[i, t_i] (t_i < 0 skipped),
// backward dlogits += scale (exp(y) - onehot(t)). Targets >= the class count raise a tls::Error
// (a device flag read back after the kernel). chunk_softmax: the softmax over the c
// consecutive rows of each chunk, separately for every column of [B, N, cols] (one thread per
// chunk and column).
#include "kernels/cuda/common.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/device_util.cuh"

namespace tls {

using cuda::kRowsPerBlock;
using cuda::row_blocks;

namespace {

// mode 0: softmax, 1: log_softmax.
template <class T>
__global__ void softmax_rows_kernel(T* y, const T* x, int64_t rows, int64_t cols, int mode) {
  TLS_WARP_ROW(i, rows)
  const T* xr = x + i * cols;
  double mx = -INFINITY;
  for (int64_t j = lane; j < cols; j += 32) mx = fmax(mx, static_cast<double>(xr[j]));
  for (int o = 16; o > 0; o >>= 1) mx = fmax(mx, __shfl_xor_sync(0xffffffffu, mx, o));
  double s = 0.0;
  for (int64_t j = lane; j < cols; j += 32) s += exp(static_cast<double>(xr[j]) - mx);
  s = cuda::warp_sum(s);
  const double inv = 1.0 / s, shift = mx + log(s);
  for (int64_t j = lane; j < cols; j += 32)
    y[i * cols + j] = static_cast<T>(mode == 0 ? exp(static_cast<double>(xr[j]) - mx) * inv
                                               : static_cast<double>(xr[j]) - shift);
}

template <class T>
__global__ void softmax_backward_kernel(T* dx, const T* dout, const T* y, int64_t rows,
                                        int64_t cols) {
  TLS_WARP_ROW(i, rows)
  double dot = 0.0;
  for (int64_t j = lane; j < cols; j += 32)
    dot += static_cast<double>(dout[i * cols + j]) * static_cast<double>(y[i * cols + j]);
  dot = cuda::warp_sum(dot);
  for (int64_t j = lane; j < cols; j += 32)
    dx[i * cols + j] += static_cast<T>(static_cast<double>(y[i * cols + j]) *
                                       (static_cast<double>(dout[i * cols + j]) - dot));
}

__device__ inline void flag_bad(int* flag, int64_t i) { atomicCAS(flag, -1, static_cast<int>(i)); }

template <class T>
__global__ void nll_kernel(T* losses, const T* lp, const int32_t* targets, int64_t rows,
                           int64_t cols, int* flag) {
  TLS_GRID_LOOP(i, rows) {
    const int32_t t = targets[i];
    if (t >= cols) flag_bad(flag, i);
    losses[i] = (t < 0 || t >= cols) ? T(0) : -lp[i * cols + t];
  }
}

template <class T>
__global__ void nll_backward_kernel(T* dl, const T* lp, const int32_t* targets, int64_t rows,
                                    int64_t cols, double scale, int* flag) {
  TLS_GRID_LOOP(k, rows * cols) {
    const int64_t i = k / cols, j = k % cols;
    const int32_t t = targets[i];
    if (t >= cols) {
      if (j == 0) flag_bad(flag, i);
      continue;
    }
    if (t < 0) continue;
    dl[k] += static_cast<T>(scale * (exp(static_cast<double>(lp[k])) - (j == t ? 1.0 : 0.0)));
  }
}

// One thread per (chunk, column): x, y [n_chunks * c, cols].
template <class T>
__global__ void chunk_softmax_kernel(T* y, const T* x, int64_t n_chunks, int64_t c, int64_t cols) {
  TLS_GRID_LOOP(k, n_chunks * cols) {
    const int64_t g = k / cols, j = k % cols;
    const int64_t base = g * c * cols + j;
    double mx = -INFINITY;
    for (int64_t i = 0; i < c; ++i) mx = fmax(mx, static_cast<double>(x[base + i * cols]));
    double s = 0.0;
    for (int64_t i = 0; i < c; ++i) s += exp(static_cast<double>(x[base + i * cols]) - mx);
    for (int64_t i = 0; i < c; ++i)
      y[base + i * cols] = static_cast<T>(exp(static_cast<double>(x[base + i * cols]) - mx) / s);
  }
}

template <class T>
__global__ void chunk_softmax_backward_kernel(T* dx, const T* dout, const T* y, int64_t n_chunks,
                                              int64_t c, int64_t cols) {
  TLS_GRID_LOOP(k, n_chunks * cols) {
    const int64_t g = k / cols, j = k % cols;
    const int64_t base = g * c * cols + j;
    double dot = 0.0;
    for (int64_t i = 0; i < c; ++i)
      dot += static_cast<double>(dout[base + i * cols]) * static_cast<double>(y[base + i * cols]);
    for (int64_t i = 0; i < c; ++i) {
      const int64_t at = base + i * cols;
      dx[at] += static_cast<T>(static_cast<double>(y[at]) * (static_cast<double>(dout[at]) - dot));
    }
  }
}

void check_pair(const char* op, const char* xn, const Tensor& x, const char* on, const Tensor& o) {
  cuda::check_float(op, xn, x);
  cuda::check_same(op, xn, x, on, o);
}

void check_targets(const char* op, const Tensor& logprobs, const Tensor& targets) {
  cuda::check_i32(op, "targets", targets);
  cuda::check_numel(op, "targets", targets, logprobs.matrix_rows());
}

void check_chunks(const char* op, const Tensor& a, const char* bn, const Tensor& b,
                  int64_t chunk_size) {
  cuda::check_float(op, "x", a);
  cuda::check_same(op, "x", a, bn, b);
  if (a.rank() != 3 || chunk_size <= 0 || a.dim(1) % chunk_size != 0)
    cuda::fail(op, "expected [B, N, cols] with N a multiple of chunk_size " +
                       std::to_string(chunk_size) + ", got " + cuda::describe("x", a));
}

}  // namespace

void CudaOps::softmax_forward(Tensor& out, const Tensor& x) {
  check_pair("softmax_forward", "x", x, "out", out);
  activate();
  const int64_t rows = x.matrix_rows(), cols = x.matrix_cols();
  if (rows == 0) return;
  cuda::dispatch_float("softmax_forward", x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    softmax_rows_kernel<T><<<row_blocks(rows), 32 * kRowsPerBlock, 0, stream_>>>(
        out.data<T>(), x.data<T>(), rows, cols, 0);
    TLS_CUDA_LAUNCHED("softmax_rows_kernel");
  });
}

void CudaOps::softmax_backward(Tensor& dx, const Tensor& dout, const Tensor& out) {
  check_pair("softmax_backward", "out", out, "dout", dout);
  cuda::check_same("softmax_backward", "out", out, "dx", dx);
  activate();
  const int64_t rows = out.matrix_rows(), cols = out.matrix_cols();
  if (rows == 0) return;
  cuda::dispatch_float("softmax_backward", out.dtype(), [&](auto tag) {
    using T = decltype(tag);
    softmax_backward_kernel<T><<<row_blocks(rows), 32 * kRowsPerBlock, 0, stream_>>>(
        dx.data<T>(), dout.data<T>(), out.data<T>(), rows, cols);
    TLS_CUDA_LAUNCHED("softmax_backward_kernel");
  });
}

void CudaOps::log_softmax_forward(Tensor& out, const Tensor& x) {
  check_pair("log_softmax_forward", "x", x, "out", out);
  activate();
  const int64_t rows = x.matrix_rows(), cols = x.matrix_cols();
  if (rows == 0) return;
  cuda::dispatch_float("log_softmax_forward", x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    softmax_rows_kernel<T><<<row_blocks(rows), 32 * kRowsPerBlock, 0, stream_>>>(
        out.data<T>(), x.data<T>(), rows, cols, 1);
    TLS_CUDA_LAUNCHED("softmax_rows_kernel");
  });
}

void CudaOps::nll_forward(Tensor& losses, const Tensor& logprobs, const Tensor& targets) {
  const char* op = "nll_forward";
  cuda::check_float(op, "logprobs", logprobs);
  cuda::check_like(op, "logprobs", logprobs, "losses", losses);
  const int64_t rows = logprobs.matrix_rows(), cols = logprobs.matrix_cols();
  cuda::check_numel(op, "losses", losses, rows);
  check_targets(op, logprobs, targets);
  if (rows == 0) return;
  activate();
  TLS_CUDA_CHECK(cudaMemsetAsync(index_flag_, 0xff, sizeof(int), stream_));
  cuda::dispatch_float(op, logprobs.dtype(), [&](auto tag) {
    using T = decltype(tag);
    nll_kernel<T><<<cuda::blocks_for(rows), cuda::kThreads, 0, stream_>>>(
        losses.data<T>(), logprobs.data<T>(), targets.data<int32_t>(), rows, cols, index_flag_);
    TLS_CUDA_LAUNCHED("nll_kernel");
  });
  check_index_flag(op, "a target", cols);
}

void CudaOps::log_softmax_nll_backward(Tensor& dlogits, const Tensor& logprobs,
                                       const Tensor& targets, double scale) {
  const char* op = "log_softmax_nll_backward";
  check_pair(op, "logprobs", logprobs, "dlogits", dlogits);
  check_targets(op, logprobs, targets);
  const int64_t rows = logprobs.matrix_rows(), cols = logprobs.matrix_cols();
  if (rows * cols == 0) return;
  activate();
  TLS_CUDA_CHECK(cudaMemsetAsync(index_flag_, 0xff, sizeof(int), stream_));
  cuda::dispatch_float(op, logprobs.dtype(), [&](auto tag) {
    using T = decltype(tag);
    nll_backward_kernel<T><<<cuda::blocks_for(rows * cols), cuda::kThreads, 0, stream_>>>(
        dlogits.data<T>(), logprobs.data<T>(), targets.data<int32_t>(), rows, cols, scale,
        index_flag_);
    TLS_CUDA_LAUNCHED("nll_backward_kernel");
  });
  check_index_flag(op, "a target", cols);
}

void CudaOps::chunk_softmax_forward(Tensor& out, const Tensor& x, int64_t chunk_size) {
  check_chunks("chunk_softmax_forward", x, "out", out, chunk_size);
  activate();
  const int64_t cols = x.dim(2), n_chunks = x.dim(0) * x.dim(1) / chunk_size;
  if (n_chunks * cols == 0) return;
  cuda::dispatch_float("chunk_softmax_forward", x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    chunk_softmax_kernel<T><<<cuda::blocks_for(n_chunks * cols), cuda::kThreads, 0, stream_>>>(
        out.data<T>(), x.data<T>(), n_chunks, chunk_size, cols);
    TLS_CUDA_LAUNCHED("chunk_softmax_kernel");
  });
}

void CudaOps::chunk_softmax_backward(Tensor& dx, const Tensor& dout, const Tensor& out,
                                     int64_t chunk_size) {
  check_chunks("chunk_softmax_backward", out, "dout", dout, chunk_size);
  cuda::check_same("chunk_softmax_backward", "out", out, "dx", dx);
  activate();
  const int64_t cols = out.dim(2), n_chunks = out.dim(0) * out.dim(1) / chunk_size;
  if (n_chunks * cols == 0) return;
  cuda::dispatch_float("chunk_softmax_backward", out.dtype(), [&](auto tag) {
    using T = decltype(tag);
    chunk_softmax_backward_kernel<T>
        <<<cuda::blocks_for(n_chunks * cols), cuda::kThreads, 0, stream_>>>(
            dx.data<T>(), dout.data<T>(), out.data<T>(), n_chunks, chunk_size, cols);
    TLS_CUDA_LAUNCHED("chunk_softmax_backward_kernel");
  });
}

}  // namespace tls
