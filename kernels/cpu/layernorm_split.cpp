// LayerNorm over features split across tensor-parallel ranks: the row statistics are partial
// sums that the caller all-reduces between these steps (parallel/tp_layernorm.cpp), so the
// result equals layernorm_forward/backward over the whole row up to summation order.
//   forward:  mean = allreduce(sum x) / n, sq = allreduce(sum (x - mean)^2),
//             rstd = 1 / sqrt(sq / n + eps), out = (x - mean) rstd gamma + beta
//   backward: (Sg, Sgx) = allreduce(sum g, sum g xhat), g = dout gamma,
//             dx += rstd (g - Sg / n - xhat Sgx / n)
#include <cmath>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/dispatch.h"

namespace tls {

using cpu::kParallelMin;

void CpuOps::row_sum(Tensor& sums, const Tensor& x, const Tensor& center, bool square) {
  const char* op = "row_sum";
  cpu::check_float(op, "x", x);
  const int64_t rows = x.matrix_rows(), cols = x.matrix_cols();
  cpu::check_like(op, "x", x, "sums", sums);
  cpu::check_numel(op, "sums", sums, rows);
  if (center.defined()) cpu::check_numel(op, "center", center, rows);
  cpu::dispatch_float(op, x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* xp = x.data<T>();
    const T* cp = center.defined() ? center.data<T>() : nullptr;
    T* sp = sums.data<T>();
#pragma omp parallel for if (rows * cols >= kParallelMin)
    for (int64_t i = 0; i < rows; ++i) {
      const double c = cp ? static_cast<double>(cp[i]) : 0.0;
      double s = 0;
      for (int64_t j = 0; j < cols; ++j) {
        const double v = static_cast<double>(xp[i * cols + j]) - c;
        s += square ? v * v : v;
      }
      sp[i] += static_cast<T>(s);
    }
  });
}

void CpuOps::layernorm_normalize(Tensor& out, Tensor& rstd, const Tensor& x, const Tensor& mean,
                                 const Tensor& sq_sum, const Tensor& gamma, const Tensor& beta,
                                 int64_t n_features, double eps) {
  const char* op = "layernorm_normalize";
  cpu::check_float(op, "x", x);
  cpu::check_same(op, "x", x, "out", out);
  const int64_t rows = x.matrix_rows(), cols = x.matrix_cols();
  for (const Tensor* t : {static_cast<const Tensor*>(&rstd), &mean, &sq_sum})
    cpu::check_numel(op, "row statistic", *t, rows);
  cpu::check_numel(op, "gamma", gamma, cols);
  cpu::check_numel(op, "beta", beta, cols);
  cpu::dispatch_float(op, x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T *xp = x.data<T>(), *mp = mean.data<T>(), *qp = sq_sum.data<T>();
    const T *gp = gamma.data<T>(), *bp = beta.data<T>();
    T *op_ = out.data<T>(), *rp = rstd.data<T>();
#pragma omp parallel for if (rows * cols >= kParallelMin)
    for (int64_t i = 0; i < rows; ++i) {
      const double mu = static_cast<double>(mp[i]);
      const double r =
          1.0 / std::sqrt(static_cast<double>(qp[i]) / static_cast<double>(n_features) + eps);
      rp[i] = static_cast<T>(r);
      for (int64_t j = 0; j < cols; ++j)
        op_[i * cols + j] = static_cast<T>((static_cast<double>(xp[i * cols + j]) - mu) * r *
                                               static_cast<double>(gp[j]) +
                                           static_cast<double>(bp[j]));
    }
  });
}

void CpuOps::layernorm_backward_sums(Tensor& sums, const Tensor& dout, const Tensor& x,
                                     const Tensor& gamma, const Tensor& mean, const Tensor& rstd) {
  const char* op = "layernorm_backward_sums";
  cpu::check_float(op, "x", x);
  cpu::check_same(op, "x", x, "dout", dout);
  const int64_t rows = x.matrix_rows(), cols = x.matrix_cols();
  cpu::check_numel(op, "sums", sums, 2 * rows);
  cpu::dispatch_float(op, x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T *xp = x.data<T>(), *gp = dout.data<T>(), *gam = gamma.data<T>();
    const T *mp = mean.data<T>(), *rp = rstd.data<T>();
    T* sp = sums.data<T>();
#pragma omp parallel for if (rows * cols >= kParallelMin)
    for (int64_t i = 0; i < rows; ++i) {
      const double mu = static_cast<double>(mp[i]), r = static_cast<double>(rp[i]);
      double sg = 0, sgx = 0;
      for (int64_t j = 0; j < cols; ++j) {
        const double g = static_cast<double>(gp[i * cols + j]) * static_cast<double>(gam[j]);
        sg += g;
        sgx += g * (static_cast<double>(xp[i * cols + j]) - mu) * r;
      }
      sp[2 * i] += static_cast<T>(sg);
      sp[2 * i + 1] += static_cast<T>(sgx);
    }
  });
}

void CpuOps::layernorm_backward_apply(Tensor& dx, Tensor& dgamma, Tensor& dbeta, const Tensor& dout,
                                      const Tensor& x, const Tensor& gamma, const Tensor& mean,
                                      const Tensor& rstd, const Tensor& sums, int64_t n_features) {
  const char* op = "layernorm_backward_apply";
  // The parameter gradients need no cross-rank statistics: the whole-row op computes them.
  Tensor no_dx;
  layernorm_backward(no_dx, dgamma, dbeta, dout, x, gamma, mean, rstd);
  if (!dx.defined()) return;
  cpu::check_same(op, "x", x, "dx", dx);
  const int64_t rows = x.matrix_rows(), cols = x.matrix_cols();
  cpu::check_numel(op, "sums", sums, 2 * rows);
  cpu::dispatch_float(op, x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T *xp = x.data<T>(), *gp = dout.data<T>(), *gam = gamma.data<T>();
    const T *mp = mean.data<T>(), *rp = rstd.data<T>(), *sp = sums.data<T>();
    T* dxp = dx.data<T>();
    const double n = static_cast<double>(n_features);
#pragma omp parallel for if (rows * cols >= kParallelMin)
    for (int64_t i = 0; i < rows; ++i) {
      const double mu = static_cast<double>(mp[i]), r = static_cast<double>(rp[i]);
      const double sg = static_cast<double>(sp[2 * i]) / n,
                   sgx = static_cast<double>(sp[2 * i + 1]) / n;
      for (int64_t j = 0; j < cols; ++j) {
        const double g = static_cast<double>(gp[i * cols + j]) * static_cast<double>(gam[j]);
        const double xhat = (static_cast<double>(xp[i * cols + j]) - mu) * r;
        dxp[i * cols + j] += static_cast<T>(r * (g - sg - xhat * sgx));
      }
    }
  });
}

}  // namespace tls
