// GEMM of the CUDA backend: C = alpha * op(A) op(B) + beta * C through cuBLAS (cublasSgemm /
// cublasDgemm). cuBLAS is column-major; a row-major matrix is the column-major view of its
// transpose, so the row-major product C = op(A) op(B) is computed as the column-major
// C^T = op(B)^T op(A)^T: swap the operands and their transposition flags, m <-> n.
// float32 uses TF32 tensor cores only when CudaOps::set_allow_tf32(true) was called.
#include "kernels/cuda/common.h"
#include "kernels/cuda/cuda_ops.h"

namespace tls {

void CudaOps::gemm(bool trans_a, bool trans_b, double alpha, const Tensor& a, const Tensor& b,
                   double beta, Tensor& c) {
  cuda::check_float("gemm", "c", c);
  cuda::check_like("gemm", "c", c, "a", a);
  cuda::check_like("gemm", "c", c, "b", b);
  const auto [m, n, k] = op_checks::gemm_dims(trans_a, trans_b, a, b, c);
  if (m == 0 || n == 0) return;
  activate();
  if (k == 0) {  // op(A) op(B) is empty: C = beta * C (beta = 0 clears, even NaN)
    if (beta == 0.0)
      fill(c, 0.0);
    else
      scale(c, beta);
    return;
  }
  const cublasOperation_t ta = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t tb = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const int lda = static_cast<int>(a.matrix_cols()), ldb = static_cast<int>(b.matrix_cols());
  const int mi = static_cast<int>(m), ni = static_cast<int>(n), ki = static_cast<int>(k);
  if (c.dtype() == DType::f32) {
    const float al = static_cast<float>(alpha), be = static_cast<float>(beta);
    TLS_CUBLAS_CHECK(cublasSgemm(cublas_, tb, ta, ni, mi, ki, &al, b.data<float>(), ldb,
                                 a.data<float>(), lda, &be, c.data<float>(), ni));
  } else {
    TLS_CUBLAS_CHECK(cublasDgemm(cublas_, tb, ta, ni, mi, ki, &alpha, b.data<double>(), ldb,
                                 a.data<double>(), lda, &beta, c.data<double>(), ni));
  }
}

}  // namespace tls
