// GEMM of the CPU backend: C = alpha * op(A) op(B) + beta * C with op(X) = X or X^T, through
// OpenBLAS cblas_sgemm / cblas_dgemm in row-major order. A, B and C are seen as 2-D matrices
// [matrix_rows, matrix_cols]; op(A) is [M, K], op(B) is [K, N] and C is [M, N].
#include <cblas.h>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/dispatch.h"

namespace tls {

void CpuOps::gemm(bool trans_a, bool trans_b, double alpha, const Tensor& a, const Tensor& b,
                  double beta, Tensor& c) {
  cpu::check_float("gemm", "c", c);
  cpu::check_like("gemm", "c", c, "a", a);
  cpu::check_like("gemm", "c", c, "b", b);
  const auto [m, n, k] = op_checks::gemm_dims(trans_a, trans_b, a, b, c);
  if (m == 0 || n == 0) return;
  if (k == 0) {  // op(A) op(B) is empty: C = beta * C (beta = 0 clears, even NaN)
    if (beta == 0.0)
      fill(c, 0.0);
    else
      scale(c, beta);
    return;
  }
  const auto ta = trans_a ? CblasTrans : CblasNoTrans;
  const auto tb = trans_b ? CblasTrans : CblasNoTrans;
  const int lda = static_cast<int>(a.matrix_cols()), ldb = static_cast<int>(b.matrix_cols());
  const int ldc = static_cast<int>(n);
  const int mi = static_cast<int>(m), ni = static_cast<int>(n), ki = static_cast<int>(k);
  if (c.dtype() == DType::f32) {
    cblas_sgemm(CblasRowMajor, ta, tb, mi, ni, ki, static_cast<float>(alpha), a.data<float>(), lda,
                b.data<float>(), ldb, static_cast<float>(beta), c.data<float>(), ldc);
  } else {
    cblas_dgemm(CblasRowMajor, ta, tb, mi, ni, ki, alpha, a.data<double>(), lda, b.data<double>(),
                ldb, beta, c.data<double>(), ldc);
  }
}

}  // namespace tls
