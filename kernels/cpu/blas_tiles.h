// Small strided GEMMs inside the attention kernels (one head's slice of a [rows, dl] tensor has
// leading dimension dl), and the guard that keeps OpenBLAS on the calling thread while OpenMP
// threads each run their own tiles.
#pragma once

#include <cblas.h>

namespace tls::cpu {

// C = alpha * op(A) op(B) + beta * C, row-major, with explicit leading dimensions.
inline void gemm_tile(bool ta, bool tb, int m, int n, int k, float alpha, const float* a, int lda,
                      const float* b, int ldb, float beta, float* c, int ldc) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n,
              k, alpha, a, lda, b, ldb, beta, c, ldc);
}
inline void gemm_tile(bool ta, bool tb, int m, int n, int k, double alpha, const double* a,
                      int lda, const double* b, int ldb, double beta, double* c, int ldc) {
  cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n,
              k, alpha, a, lda, b, ldb, beta, c, ldc);
}

// While alive, OpenBLAS computes on the calling thread only (the OpenMP threads already split
// the tiles between them); restores the previous thread count afterwards.
class SingleThreadedBlas {
 public:
  SingleThreadedBlas();
  ~SingleThreadedBlas();
  SingleThreadedBlas(const SingleThreadedBlas&) = delete;
  SingleThreadedBlas& operator=(const SingleThreadedBlas&) = delete;

 private:
  int previous_;
};

}  // namespace tls::cpu
