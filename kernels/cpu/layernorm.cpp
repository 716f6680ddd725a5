// LayerNorm of the CPU backend, per row of x [R, C]: mean = sum x / C,
// var = sum (x - mean)^2 / C (biased), rstd = 1 / sqrt(var + eps), xhat = (x - mean) rstd,
// out = xhat * gamma + beta. Backward with g = dout * gamma:
// dx += rstd (g - mean(g) - xhat mean(g xhat)), dgamma += sum_i dout xhat,
// dbeta += sum_i dout.
#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/dispatch.h"
#include "kernels/cpu/kernel_scratch.h"
#include "kernels/cpu/vector_layernorm.h"

namespace tls {

using cpu::check_like;
using cpu::check_numel;
using cpu::kParallelMin;

void CpuOps::layernorm_forward(Tensor& out, Tensor& mean, Tensor& rstd, const Tensor& x,
                               const Tensor& gamma, const Tensor& beta, double eps) {
  const char* op = "layernorm_forward";
  cpu::check_same(op, "x", x, "out", out);
  op_checks::check_layernorm<Device::cpu>(op, x, mean, rstd, gamma, beta);
  const int64_t rows = x.matrix_rows(), cols = x.matrix_cols();
  if (cols == 0) cpu::fail(op, "rows of " + cpu::describe("x", x) + " are empty");
  cpu::dispatch_float(op, x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* xp = x.data<T>();
    const T* gp = gamma.data<T>();
    const T* bp = beta.data<T>();
    T* outp = out.data<T>();
    T* mp = mean.data<T>();
    T* rp = rstd.data<T>();
#pragma omp parallel for if (rows * cols >= kParallelMin)
    for (int64_t i = 0; i < rows; ++i) {
      const T* xr = xp + i * cols;
      if constexpr (std::is_same_v<T, float>) {  // vector lanes (vector_layernorm.cpp)
        const cpu::RowMoments m =
            cpu::layernorm_row_forward(xr, gp, bp, outp + i * cols, cols, eps);
        mp[i] = static_cast<T>(m.mean);
        rp[i] = static_cast<T>(m.rstd);
        continue;
      }
      double s = 0.0;
      for (int64_t j = 0; j < cols; ++j) s += static_cast<double>(xr[j]);
      const double mu = s / static_cast<double>(cols);
      double ss = 0.0;
      for (int64_t j = 0; j < cols; ++j) {
        const double d = static_cast<double>(xr[j]) - mu;
        ss += d * d;
      }
      const double r = 1.0 / std::sqrt(ss / static_cast<double>(cols) + eps);
      T* orow = outp + i * cols;
      for (int64_t j = 0; j < cols; ++j)
        orow[j] =
            static_cast<T>((static_cast<double>(xr[j]) - mu) * r * static_cast<double>(gp[j]) +
                           static_cast<double>(bp[j]));
      mp[i] = static_cast<T>(mu);
      rp[i] = static_cast<T>(r);
    }
  });
}

namespace {

// The float32 backward with every gradient wanted, in one pass over x and dout per row (vector
// lanes, kernels/cpu/vector_layernorm.cpp). dgamma and dbeta are summed per fixed block of rows
// and the blocks added in order, so the sums do not depend on the number of threads.
void layernorm_backward_fused(float* dx, float* dgamma, float* dbeta, const float* dout,
                              const float* x, const float* gamma, const float* mean,
                              const float* rstd, int64_t rows, int64_t cols) {
  constexpr int64_t kRowBlock = cpu::scratch::kLayerNormRowBlock;
  const auto sums_shape = cpu::scratch::layernorm_block_sums(rows, cols);
  const int64_t n_blocks = sums_shape[0];
  Tensor ag_sums = Tensor::zeros(sums_shape, DType::f64);
  Tensor ab_sums = Tensor::zeros(sums_shape, DType::f64);
  double* ag = ag_sums.data<double>();
  double* ab = ab_sums.data<double>();
#pragma omp parallel for schedule(static) if (rows * cols >= kParallelMin)
  for (int64_t blk = 0; blk < n_blocks; ++blk) {
    double* agb = ag + blk * cols;
    double* abb = ab + blk * cols;
    for (int64_t i = blk * kRowBlock; i < std::min(rows, (blk + 1) * kRowBlock); ++i)
      cpu::layernorm_row_backward_with_parameter_grads(
          x + i * cols, dout + i * cols, gamma, static_cast<double>(mean[i]),
          static_cast<double>(rstd[i]), dx + i * cols, agb, abb, cols);
  }
#pragma omp parallel for schedule(static) if (n_blocks * cols >= kParallelMin)
  for (int64_t j = 0; j < cols; ++j) {
    double sg = 0.0, sb = 0.0;
    for (int64_t blk = 0; blk < n_blocks; ++blk) {
      sg += ag[blk * cols + j];
      sb += ab[blk * cols + j];
    }
    dgamma[j] += static_cast<float>(sg);
    dbeta[j] += static_cast<float>(sb);
  }
}

}  // namespace

void CpuOps::layernorm_backward(Tensor& dx, Tensor& dgamma, Tensor& dbeta, const Tensor& dout,
                                const Tensor& x, const Tensor& gamma, const Tensor& mean,
                                const Tensor& rstd) {
  const char* op = "layernorm_backward";
  op_checks::check_layernorm<Device::cpu>(op, x, mean, rstd, gamma, dgamma, dbeta);
  cpu::check_same(op, "x", x, "dout", dout);
  if (dx.defined()) cpu::check_same(op, "x", x, "dx", dx);
  const int64_t rows = x.matrix_rows(), cols = x.matrix_cols();
  cpu::dispatch_float(op, x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* xp = x.data<T>();
    const T* gp = dout.data<T>();
    const T* gam = gamma.data<T>();
    const T* mp = mean.data<T>();
    const T* rp = rstd.data<T>();
    if constexpr (std::is_same_v<T, float>) {
      if (dx.defined() && dgamma.defined() && dbeta.defined()) {
        layernorm_backward_fused(dx.data<float>(), dgamma.data<float>(), dbeta.data<float>(), gp,
                                 xp, gam, mp, rp, rows, cols);
        return;
      }
    }
    if (dx.defined()) {
      T* dxp = dx.data<T>();
#pragma omp parallel for if (rows * cols >= kParallelMin)
      for (int64_t i = 0; i < rows; ++i) {
        const T* xr = xp + i * cols;
        const T* gr = gp + i * cols;
        const double mu = static_cast<double>(mp[i]), r = static_cast<double>(rp[i]);
        if constexpr (std::is_same_v<T, float>) {
          cpu::layernorm_row_backward(xr, gr, gam, mu, r, dxp + i * cols, cols);
          continue;
        }
        double sg = 0.0, sgx = 0.0;
        for (int64_t j = 0; j < cols; ++j) {
          const double g = static_cast<double>(gr[j]) * static_cast<double>(gam[j]);
          sg += g;
          sgx += g * (static_cast<double>(xr[j]) - mu) * r;
        }
        sg /= static_cast<double>(cols);
        sgx /= static_cast<double>(cols);
        T* dr = dxp + i * cols;
        for (int64_t j = 0; j < cols; ++j) {
          const double g = static_cast<double>(gr[j]) * static_cast<double>(gam[j]);
          const double xhat = (static_cast<double>(xr[j]) - mu) * r;
          dr[j] += static_cast<T>(r * (g - sg - xhat * sgx));
        }
      }
    }
    if (!dgamma.defined() && !dbeta.defined()) return;
    T* dgp = dgamma.defined() ? dgamma.data<T>() : nullptr;
    T* dbp = dbeta.defined() ? dbeta.data<T>() : nullptr;
    constexpr int64_t kBlock = 64;  // columns per task, summed over every row
    const int64_t n_blocks = (cols + kBlock - 1) / kBlock;
#pragma omp parallel for if (rows * cols >= kParallelMin)
    for (int64_t blk = 0; blk < n_blocks; ++blk) {
      const int64_t j0 = blk * kBlock, j1 = std::min(cols, j0 + kBlock);
      double ag[kBlock] = {}, ab[kBlock] = {};
      for (int64_t i = 0; i < rows; ++i) {
        const T* xr = xp + i * cols;
        const T* gr = gp + i * cols;
        const double mu = static_cast<double>(mp[i]), r = static_cast<double>(rp[i]);
        if constexpr (std::is_same_v<T, float>) {
          cpu::layernorm_row_parameter_grads(xr + j0, gr + j0, mu, r, ag, ab, j1 - j0);
          continue;
        }
        for (int64_t j = j0; j < j1; ++j) {
          const double g = static_cast<double>(gr[j]);
          ag[j - j0] += g * (static_cast<double>(xr[j]) - mu) * r;
          ab[j - j0] += g;
        }
      }
      for (int64_t j = j0; j < j1; ++j) {
        if (dgp) dgp[j] += static_cast<T>(ag[j - j0]);
        if (dbp) dbp[j] += static_cast<T>(ab[j - j0]);
      }
    }
  });
}

}  // namespace tls
