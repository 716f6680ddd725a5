// LayerNorm of the CUDA backend, per row of x [R, C] (one warp per row, sums in double):
// mean = sum x / C, var = sum (x - mean)^2 / C (biased), rstd = 1 / sqrt(var + eps),
// xhat = (x - mean) rstd, out = xhat * gamma + beta. Backward with g = dout * gamma:
// dx += rstd (g - mean(g) - xhat mean(g xhat)), dgamma += sum_i dout xhat, dbeta += sum_i dout
// (column sums in two deterministic passes). The split-feature variants for tensor parallelism
// (row_sum, layernorm_normalize, layernorm_backward_sums/_apply) are the same steps with the
// row statistics passed in, as in kernels/cpu/layernorm_split.cpp.
#include "kernels/cuda/common.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/device_util.cuh"

namespace tls {

using cuda::check_like;
using cuda::check_numel;
using cuda::kRowsPerBlock;
using cuda::row_blocks;

namespace {

template <class T>
__global__ void ln_forward_kernel(T* out, T* mean, T* rstd, const T* x, const T* gamma,
                                  const T* beta, int64_t rows, int64_t cols, double eps) {
  TLS_WARP_ROW(i, rows)
  const T* xr = x + i * cols;
  double s = 0.0;
  for (int64_t j = lane; j < cols; j += 32) s += static_cast<double>(xr[j]);
  const double mu = cuda::warp_sum(s) / static_cast<double>(cols);
  double ss = 0.0;
  for (int64_t j = lane; j < cols; j += 32) {
    const double d = static_cast<double>(xr[j]) - mu;
    ss += d * d;
  }
  const double r = 1.0 / sqrt(cuda::warp_sum(ss) / static_cast<double>(cols) + eps);
  for (int64_t j = lane; j < cols; j += 32)
    out[i * cols + j] =
        static_cast<T>((static_cast<double>(xr[j]) - mu) * r * static_cast<double>(gamma[j]) +
                       static_cast<double>(beta[j]));
  if (lane == 0) {
    mean[i] = static_cast<T>(mu);
    rstd[i] = static_cast<T>(r);
  }
}

// Row sums of g = dout * gamma and g * xhat; sums gets (sum g, sum g xhat) per row when
// `sums` is set, dx += rstd (g - sg / n - xhat sgx / n) when `dx` is set and sums_in is null
// (whole-row LayerNorm) or with sums_in's values (split LayerNorm).
template <class T>
__global__ void ln_backward_rows_kernel(T* dx, T* sums, const T* sums_in, const T* dout, const T* x,
                                        const T* gamma, const T* mean, const T* rstd, int64_t rows,
                                        int64_t cols, double n) {
  TLS_WARP_ROW(i, rows)
  const double mu = static_cast<double>(mean[i]), r = static_cast<double>(rstd[i]);
  const T* xr = x + i * cols;
  const T* gr = dout + i * cols;
  double sg = 0.0, sgx = 0.0;
  if (sums_in) {
    sg = static_cast<double>(sums_in[2 * i]);
    sgx = static_cast<double>(sums_in[2 * i + 1]);
  } else {
    for (int64_t j = lane; j < cols; j += 32) {
      const double g = static_cast<double>(gr[j]) * static_cast<double>(gamma[j]);
      sg += g;
      sgx += g * (static_cast<double>(xr[j]) - mu) * r;
    }
    sg = cuda::warp_sum(sg);
    sgx = cuda::warp_sum(sgx);
  }
  if (sums && lane == 0) {
    sums[2 * i] += static_cast<T>(sg);
    sums[2 * i + 1] += static_cast<T>(sgx);
  }
  if (!dx) return;
  sg /= n;
  sgx /= n;
  for (int64_t j = lane; j < cols; j += 32) {
    const double g = static_cast<double>(gr[j]) * static_cast<double>(gamma[j]);
    const double xhat = (static_cast<double>(xr[j]) - mu) * r;
    dx[i * cols + j] += static_cast<T>(r * (g - sg - xhat * sgx));
  }
}

template <class T>
__global__ void row_sum_kernel(T* sums, const T* x, const T* center, bool square, int64_t rows,
                               int64_t cols) {
  TLS_WARP_ROW(i, rows)
  const double c = center ? static_cast<double>(center[i]) : 0.0;
  double s = 0.0;
  for (int64_t j = lane; j < cols; j += 32) {
    const double v = static_cast<double>(x[i * cols + j]) - c;
    s += square ? v * v : v;
  }
  s = cuda::warp_sum(s);
  if (lane == 0) sums[i] += static_cast<T>(s);
}

template <class T>
__global__ void ln_normalize_kernel(T* out, T* rstd, const T* x, const T* mean, const T* sq,
                                    const T* gamma, const T* beta, int64_t rows, int64_t cols,
                                    double n, double eps) {
  TLS_WARP_ROW(i, rows)
  const double mu = static_cast<double>(mean[i]);
  const double r = 1.0 / sqrt(static_cast<double>(sq[i]) / n + eps);
  if (lane == 0) rstd[i] = static_cast<T>(r);
  for (int64_t j = lane; j < cols; j += 32)
    out[i * cols + j] = static_cast<T>((static_cast<double>(x[i * cols + j]) - mu) * r *
                                           static_cast<double>(gamma[j]) +
                                       static_cast<double>(beta[j]));
}

template <class T>
struct DGamma {
  const T *dout, *x, *mean, *rstd;
  int64_t cols;
  __device__ double operator()(int64_t i, int64_t j) const {
    return static_cast<double>(dout[i * cols + j]) *
           (static_cast<double>(x[i * cols + j]) - static_cast<double>(mean[i])) *
           static_cast<double>(rstd[i]);
  }
};

template <class T>
struct DBeta {
  const T* dout;
  int64_t cols;
  __device__ double operator()(int64_t i, int64_t j) const {
    return static_cast<double>(dout[i * cols + j]);
  }
};

}  // namespace

void CudaOps::layernorm_forward(Tensor& out, Tensor& mean, Tensor& rstd, const Tensor& x,
                                const Tensor& gamma, const Tensor& beta, double eps) {
  const char* op = "layernorm_forward";
  cuda::check_same(op, "x", x, "out", out);
  op_checks::check_layernorm<Device::cuda>(op, x, mean, rstd, gamma, beta);
  const int64_t rows = x.matrix_rows(), cols = x.matrix_cols();
  if (cols == 0) cuda::fail(op, "rows of " + cuda::describe("x", x) + " are empty");
  if (rows == 0) return;
  activate();
  cuda::dispatch_float(op, x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    ln_forward_kernel<T><<<row_blocks(rows), 32 * kRowsPerBlock, 0, stream_>>>(
        out.data<T>(), mean.data<T>(), rstd.data<T>(), x.data<T>(), gamma.data<T>(), beta.data<T>(),
        rows, cols, eps);
    TLS_CUDA_LAUNCHED("ln_forward_kernel");
  });
}

void CudaOps::layernorm_backward(Tensor& dx, Tensor& dgamma, Tensor& dbeta, const Tensor& dout,
                                 const Tensor& x, const Tensor& gamma, const Tensor& mean,
                                 const Tensor& rstd) {
  const char* op = "layernorm_backward";
  op_checks::check_layernorm<Device::cuda>(op, x, mean, rstd, gamma, dgamma, dbeta);
  cuda::check_same(op, "x", x, "dout", dout);
  if (dx.defined()) cuda::check_same(op, "x", x, "dx", dx);
  const int64_t rows = x.matrix_rows(), cols = x.matrix_cols();
  if (rows == 0) return;
  activate();
  Tensor partial;
  if (dgamma.defined() || dbeta.defined())
    partial = empty({cuda::column_slabs(rows) * cols}, DType::f64);
  cuda::dispatch_float(op, x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    if (dx.defined()) {
      ln_backward_rows_kernel<T><<<row_blocks(rows), 32 * kRowsPerBlock, 0, stream_>>>(
          dx.data<T>(), nullptr, nullptr, dout.data<T>(), x.data<T>(), gamma.data<T>(),
          mean.data<T>(), rstd.data<T>(), rows, cols, static_cast<double>(cols));
      TLS_CUDA_LAUNCHED("ln_backward_rows_kernel");
    }
    if (dgamma.defined())
      cuda::column_sum(DGamma<T>{dout.data<T>(), x.data<T>(), mean.data<T>(), rstd.data<T>(), cols},
                       rows, cols, dgamma.data<T>(), partial.data<double>(), stream_);
    if (dbeta.defined())
      cuda::column_sum(DBeta<T>{dout.data<T>(), cols}, rows, cols, dbeta.data<T>(),
                       partial.data<double>(), stream_);
  });
}

void CudaOps::row_sum(Tensor& sums, const Tensor& x, const Tensor& center, bool square) {
  const char* op = "row_sum";
  cuda::check_float(op, "x", x);
  const int64_t rows = x.matrix_rows(), cols = x.matrix_cols();
  check_like(op, "x", x, "sums", sums);
  check_numel(op, "sums", sums, rows);
  if (center.defined()) {
    check_like(op, "x", x, "center", center);
    check_numel(op, "center", center, rows);
  }
  if (rows == 0) return;
  activate();
  cuda::dispatch_float(op, x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    row_sum_kernel<T><<<row_blocks(rows), 32 * kRowsPerBlock, 0, stream_>>>(
        sums.data<T>(), x.data<T>(), cuda::ptr_or_null<T>(center), square, rows, cols);
    TLS_CUDA_LAUNCHED("row_sum_kernel");
  });
}

void CudaOps::layernorm_normalize(Tensor& out, Tensor& rstd, const Tensor& x, const Tensor& mean,
                                  const Tensor& sq_sum, const Tensor& gamma, const Tensor& beta,
                                  int64_t n_features, double eps) {
  const char* op = "layernorm_normalize";
  cuda::check_float(op, "x", x);
  cuda::check_same(op, "x", x, "out", out);
  const int64_t rows = x.matrix_rows(), cols = x.matrix_cols();
  check_like(op, "x", x, "rstd", rstd);
  check_like(op, "x", x, "mean", mean);
  check_like(op, "x", x, "sq_sum", sq_sum);
  for (const Tensor* t : {static_cast<const Tensor*>(&rstd), &mean, &sq_sum})
    check_numel(op, "row statistic", *t, rows);
  check_numel(op, "gamma", gamma, cols);
  check_numel(op, "beta", beta, cols);
  if (rows == 0) return;
  activate();
  cuda::dispatch_float(op, x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    ln_normalize_kernel<T><<<row_blocks(rows), 32 * kRowsPerBlock, 0, stream_>>>(
        out.data<T>(), rstd.data<T>(), x.data<T>(), mean.data<T>(), sq_sum.data<T>(),
        gamma.data<T>(), beta.data<T>(), rows, cols, static_cast<double>(n_features), eps);
    TLS_CUDA_LAUNCHED("ln_normalize_kernel");
  });
}

void CudaOps::layernorm_backward_sums(Tensor& sums, const Tensor& dout, const Tensor& x,
                                      const Tensor& gamma, const Tensor& mean, const Tensor& rstd) {
  const char* op = "layernorm_backward_sums";
  cuda::check_float(op, "x", x);
  cuda::check_same(op, "x", x, "dout", dout);
  const int64_t rows = x.matrix_rows(), cols = x.matrix_cols();
  check_like(op, "x", x, "sums", sums);
  check_numel(op, "sums", sums, 2 * rows);
  check_numel(op, "gamma", gamma, cols);
  if (rows == 0) return;
  activate();
  cuda::dispatch_float(op, x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    ln_backward_rows_kernel<T><<<row_blocks(rows), 32 * kRowsPerBlock, 0, stream_>>>(
        nullptr, sums.data<T>(), nullptr, dout.data<T>(), x.data<T>(), gamma.data<T>(),
        mean.data<T>(), rstd.data<T>(), rows, cols, static_cast<double>(cols));
    TLS_CUDA_LAUNCHED("ln_backward_rows_kernel");
  });
}

void CudaOps::layernorm_backward_apply(Tensor& dx, Tensor& dgamma, Tensor& dbeta,
                                       const Tensor& dout, const Tensor& x, const Tensor& gamma,
                                       const Tensor& mean, const Tensor& rstd, const Tensor& sums,
                                       int64_t n_features) {
  const char* op = "layernorm_backward_apply";
  // The parameter gradients need no cross-rank statistics: the whole-row op computes them.
  Tensor no_dx;
  layernorm_backward(no_dx, dgamma, dbeta, dout, x, gamma, mean, rstd);
  if (!dx.defined()) return;
  cuda::check_same(op, "x", x, "dx", dx);
  const int64_t rows = x.matrix_rows(), cols = x.matrix_cols();
  check_like(op, "x", x, "sums", sums);
  check_numel(op, "sums", sums, 2 * rows);
  if (rows == 0) return;
  cuda::dispatch_float(op, x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    ln_backward_rows_kernel<T><<<row_blocks(rows), 32 * kRowsPerBlock, 0, stream_>>>(
        dx.data<T>(), nullptr, sums.data<T>(), dout.data<T>(), x.data<T>(), gamma.data<T>(),
        mean.data<T>(), rstd.data<T>(), rows, cols, static_cast<double>(n_features));
    TLS_CUDA_LAUNCHED("ln_backward_rows_kernel");
  });
}

}  // namespace tls
