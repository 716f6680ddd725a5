// GEMM of the CPU backend: C = alpha * op(A) op(B) + beta * C with op(X) = X or X^T, through
// OpenBLAS cblas_sgemm / cblas_dgemm in row-major order. A, B and C are seen as 2-D matrices
// [matrix_rows, matrix_cols]; op(A) is [M, K], op(B) is [K, N] and C is [M, N].
//
// OpenBLAS runs on the calling thread (kernels/cpu/blas_tiles.h); a large product is cut into
// one block of C per OpenMP thread, along its longer side, each block a GEMM of its own.
// With GemmInputs::bf16 a float32 GEMM multiplies bf16-rounded copies of A and B (float32
// accumulation), the numerics of the GPU's bf16 tensor-core GEMM; it is slower than float32 here.
#include <omp.h>

#include <algorithm>

#include "kernels/cpu/bf16.h"
#include "kernels/cpu/blas_tiles.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/dispatch.h"
#include "kernels/error.h"

namespace tls {
namespace {

// Below this many multiply-adds a GEMM is not worth a parallel region.
constexpr int64_t kParallelGemmMin = int64_t{1} << 21;
// Blocks narrower than this lose OpenBLAS's register blocking.
constexpr int64_t kMinBlock = 32;

template <class T>
void blocked_gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, T alpha, const T* a,
                  int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc) {
  const bool split_rows = m >= n;
  const int64_t side = split_rows ? m : n;
  int parts = omp_in_parallel() ? 1 : omp_get_max_threads();
  if (m * n * k < kParallelGemmMin) parts = 1;
  parts = static_cast<int>(std::clamp<int64_t>(side / kMinBlock, 1, parts));
#pragma omp parallel for num_threads(parts) schedule(static) if (parts > 1)
  for (int p = 0; p < parts; ++p) {
    // Block boundaries on multiples of 16 keep every block's start vector-aligned.
    const int64_t lo = side * p / parts / 16 * 16;
    const int64_t hi = p + 1 == parts ? side : side * (p + 1) / parts / 16 * 16;
    if (hi <= lo) continue;
    const T* a_block = a;
    const T* b_block = b;
    T* c_block = c;
    int64_t rows = m, cols = n;
    if (split_rows) {  // rows lo..hi of op(A) and of C
      a_block = ta ? a + lo : a + lo * lda;
      c_block = c + lo * ldc;
      rows = hi - lo;
    } else {  // columns lo..hi of op(B) and of C
      b_block = tb ? b + lo * ldb : b + lo;
      c_block = c + lo;
      cols = hi - lo;
    }
    cpu::gemm_tile(ta, tb, static_cast<int>(rows), static_cast<int>(cols), static_cast<int>(k),
                   alpha, a_block, static_cast<int>(lda), b_block, static_cast<int>(ldb), beta,
                   c_block, static_cast<int>(ldc));
  }
}

// dst <- the bf16 rounding of x (resized to fit).
const float* rounded_to_bf16(const Tensor& x, std::vector<float>& dst) {
  const int64_t n = x.numel();
  dst.resize(static_cast<size_t>(n));
  const float* src = x.data<float>();
#pragma omp parallel for schedule(static) if (n > (int64_t{1} << 16))
  for (int64_t i = 0; i < n; ++i) dst[static_cast<size_t>(i)] = cpu::round_to_bf16(src[i]);
  return dst.data();
}

}  // namespace

CpuOps::CpuOps() { cpu::use_calling_thread_blas(); }

void CpuOps::set_gemm_inputs(GemmInputs mode) {
  if (mode == GemmInputs::tf32)
    throw Error("TF32 GEMMs need tensor cores: the CPU backend has only exact float32 and bf16");
  gemm_inputs_ = mode;
}

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
  const int64_t lda = a.matrix_cols(), ldb = b.matrix_cols(), ldc = n;
  if (c.dtype() == DType::f32) {
    const bool bf16 = gemm_inputs_ == GemmInputs::bf16;
    const float* pa = bf16 ? rounded_to_bf16(a, bf16_a_) : a.data<float>();
    const float* pb = bf16 ? rounded_to_bf16(b, bf16_b_) : b.data<float>();
    blocked_gemm(trans_a, trans_b, m, n, k, static_cast<float>(alpha), pa, lda, pb, ldb,
                 static_cast<float>(beta), c.data<float>(), ldc);
  } else {
    blocked_gemm(trans_a, trans_b, m, n, k, alpha, a.data<double>(), lda, b.data<double>(), ldb,
                 beta, c.data<double>(), ldc);
  }
}

}  // namespace tls
