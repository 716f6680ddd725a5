// GEMM of the CUDA backend: C = alpha * op(A) op(B) + beta * C through cuBLAS (cublasSgemm /
// cublasDgemm). cuBLAS is column-major; a row-major matrix is the column-major view of its
// transpose, so the row-major product C = op(A) op(B) is computed as the column-major
// C^T = op(B)^T op(A)^T: swap the operands and their transposition flags, m <-> n.
// float32 uses TF32 tensor cores only after set_gemm_inputs(GemmInputs::tf32). With
// GemmInputs::bf16 the float32 operands are rounded into bf16 scratch (stream-ordered
// allocations, freed when the GEMM is done) and cublasGemmEx multiplies them on tensor cores,
// accumulating and writing C in float32.
#include <algorithm>

#include "kernels/cuda/bf16_convert.h"
#include "kernels/cuda/common.h"
#include "kernels/cuda/cuda_ops.h"

namespace tls {
namespace {

// A float32 matrix rounded to bf16 in device scratch memory.
class Bf16Copy {
 public:
  Bf16Copy(const Tensor& x, cudaStream_t stream) : stream_(stream) {
    const size_t n = static_cast<size_t>(x.numel());
    TLS_CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&data_),
                                   std::max<size_t>(n, 1) * sizeof(__nv_bfloat16), stream));
    cuda::convert_to_bf16(data_, x.data<float>(), x.numel(), stream);
  }
  ~Bf16Copy() {
    if (cudaFreeAsync(data_, stream_) != cudaSuccess) cudaGetLastError();
  }
  Bf16Copy(const Bf16Copy&) = delete;
  Bf16Copy& operator=(const Bf16Copy&) = delete;
  const __nv_bfloat16* data() const { return data_; }

 private:
  __nv_bfloat16* data_ = nullptr;
  cudaStream_t stream_;
};

}  // namespace

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
  if (c.dtype() == DType::f32 && gemm_inputs_ == GemmInputs::bf16) {
    const float al = static_cast<float>(alpha), be = static_cast<float>(beta);
    const Bf16Copy a16(a, stream_), b16(b, stream_);
    TLS_CUBLAS_CHECK(cublasGemmEx(cublas_, tb, ta, ni, mi, ki, &al, b16.data(), CUDA_R_16BF, ldb,
                                  a16.data(), CUDA_R_16BF, lda, &be, c.data<float>(), CUDA_R_32F,
                                  ni, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  } else if (c.dtype() == DType::f32) {
    const float al = static_cast<float>(alpha), be = static_cast<float>(beta);
    TLS_CUBLAS_CHECK(cublasSgemm(cublas_, tb, ta, ni, mi, ki, &al, b.data<float>(), ldb,
                                 a.data<float>(), lda, &be, c.data<float>(), ni));
  } else {
    TLS_CUBLAS_CHECK(cublasDgemm(cublas_, tb, ta, ni, mi, ki, &alpha, b.data<double>(), ldb,
                                 a.data<double>(), lda, &beta, c.data<double>(), ni));
  }
}

}  // namespace tls
