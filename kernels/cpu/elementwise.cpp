// Elementwise ops and reductions of the CPU backend: x *= alpha, y += alpha x,
// y[i, :] += bias, dbias += sum_i dy[i, :], sum x^2, sum x and the finiteness test.
// Reductions accumulate in double (per column for sum_rows, so the result is deterministic).
#include <algorithm>
#include <cmath>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/dispatch.h"

namespace tls {

using cpu::check_float;
using cpu::dispatch_float;
using cpu::kParallelMin;

void CpuOps::scale(Tensor& x, double alpha) {
  check_float("scale", "x", x);
  dispatch_float("scale", x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    T* p = x.data<T>();
    const T a = static_cast<T>(alpha);
    const int64_t n = x.numel();
#pragma omp parallel for if (n >= kParallelMin)
    for (int64_t i = 0; i < n; ++i) p[i] *= a;
  });
}

void CpuOps::axpy(double alpha, const Tensor& x, Tensor& y) {
  check_float("axpy", "y", y);
  cpu::check_like("axpy", "y", y, "x", x);
  cpu::check_numel("axpy", "x", x, y.numel());
  dispatch_float("axpy", y.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* xp = x.data<T>();
    T* yp = y.data<T>();
    const T a = static_cast<T>(alpha);
    const int64_t n = y.numel();
#pragma omp parallel for if (n >= kParallelMin)
    for (int64_t i = 0; i < n; ++i) yp[i] += a * xp[i];
  });
}

void CpuOps::add_bias(Tensor& y, const Tensor& bias) {
  check_float("add_bias", "y", y);
  cpu::check_like("add_bias", "y", y, "bias", bias);
  const int64_t rows = y.matrix_rows(), cols = y.matrix_cols();
  cpu::check_numel("add_bias", "bias", bias, cols);
  dispatch_float("add_bias", y.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* bp = bias.data<T>();
    T* yp = y.data<T>();
#pragma omp parallel for if (rows * cols >= kParallelMin)
    for (int64_t i = 0; i < rows; ++i) {
      T* row = yp + i * cols;
      for (int64_t j = 0; j < cols; ++j) row[j] += bp[j];
    }
  });
}

void CpuOps::sum_rows(const Tensor& dy, Tensor& dbias) {
  check_float("sum_rows", "dy", dy);
  cpu::check_like("sum_rows", "dy", dy, "dbias", dbias);
  const int64_t rows = dy.matrix_rows(), cols = dy.matrix_cols();
  cpu::check_numel("sum_rows", "dbias", dbias, cols);
  constexpr int64_t kBlock = 64;  // columns per task: each task sums its columns over all rows
  const int64_t n_blocks = (cols + kBlock - 1) / kBlock;
  dispatch_float("sum_rows", dy.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* g = dy.data<T>();
    T* out = dbias.data<T>();
#pragma omp parallel for if (rows * cols >= kParallelMin)
    for (int64_t blk = 0; blk < n_blocks; ++blk) {
      const int64_t j0 = blk * kBlock, j1 = std::min(cols, j0 + kBlock);
      double acc[kBlock] = {};
      for (int64_t i = 0; i < rows; ++i) {
        const T* row = g + i * cols;
        for (int64_t j = j0; j < j1; ++j) acc[j - j0] += static_cast<double>(row[j]);
      }
      for (int64_t j = j0; j < j1; ++j) out[j] += static_cast<T>(acc[j - j0]);
    }
  });
}

double CpuOps::sum_squares(const Tensor& x) {
  check_float("sum_squares", "x", x);
  return dispatch_float("sum_squares", x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* p = x.data<T>();
    const int64_t n = x.numel();
    double acc = 0.0;
#pragma omp parallel for reduction(+ : acc) if (n >= kParallelMin)
    for (int64_t i = 0; i < n; ++i) acc += static_cast<double>(p[i]) * static_cast<double>(p[i]);
    return acc;
  });
}

double CpuOps::sum(const Tensor& x) {
  check_float("sum", "x", x);
  return dispatch_float("sum", x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* p = x.data<T>();
    const int64_t n = x.numel();
    double acc = 0.0;
#pragma omp parallel for reduction(+ : acc) if (n >= kParallelMin)
    for (int64_t i = 0; i < n; ++i) acc += static_cast<double>(p[i]);
    return acc;
  });
}

bool CpuOps::all_finite(const Tensor& x) {
  check_float("all_finite", "x", x);
  return dispatch_float("all_finite", x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* p = x.data<T>();
    const int64_t n = x.numel();
    int64_t bad = 0;
#pragma omp parallel for reduction(+ : bad) if (n >= kParallelMin)
    for (int64_t i = 0; i < n; ++i) bad += std::isfinite(p[i]) ? 0 : 1;
    return bad == 0;
  });
}

}  // namespace tls
