// GEMM of the CPU backend: C = alpha * op(A) op(B) + beta * C with op(X) = X or X^T, through
// OpenBLAS cblas_sgemm / cblas_dgemm in row-major order. A, B and C are seen as 2-D matrices
// [matrix_rows, matrix_cols]; op(A) is [M, K], op(B) is [K, N] and C is [M, N].
#include <cblas.h>

#include <climits>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/dispatch.h"

namespace tls {

namespace {

std::string matrix_string(const char* name, const Tensor& t, bool trans) {
  return std::string(name) + (trans ? "^T" : "") + " [" + std::to_string(t.matrix_rows()) + " x " +
         std::to_string(t.matrix_cols()) + "] (shape " + t.shape_string() + ")";
}

}  // namespace

void CpuOps::gemm(bool trans_a, bool trans_b, double alpha, const Tensor& a, const Tensor& b,
                  double beta, Tensor& c) {
  cpu::check_float("gemm", "c", c);
  cpu::check_like("gemm", "c", c, "a", a);
  cpu::check_like("gemm", "c", c, "b", b);
  const int64_t m = trans_a ? a.matrix_cols() : a.matrix_rows();
  const int64_t k = trans_a ? a.matrix_rows() : a.matrix_cols();
  const int64_t kb = trans_b ? b.matrix_cols() : b.matrix_rows();
  const int64_t n = trans_b ? b.matrix_rows() : b.matrix_cols();
  if (k != kb || c.matrix_rows() != m || c.matrix_cols() != n)
    cpu::fail("gemm", "shape mismatch: " + matrix_string("A", a, trans_a) + " times " +
                          matrix_string("B", b, trans_b) + " into " + matrix_string("C", c, false));
  for (int64_t v : {m, n, k})
    if (v > INT_MAX) cpu::fail("gemm", "a matrix dimension exceeds the BLAS int range");
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
