// Small strided GEMMs inside the attention kernels (one head's slice of a [rows, dl] tensor has
// leading dimension dl), and the CPU backend's threading rule for OpenBLAS.
//
// One thread pool: OpenBLAS always computes on the calling thread, and the CPU backend spreads
// work over OpenMP's threads itself (the attention kernels by tiles, CpuOps::gemm by blocks of
// the output). OpenBLAS's own pthreads and OpenMP's threads on the same cores fight: OpenMP's
// threads spin-wait after each parallel region while OpenBLAS's run on the same cores, so each
// pool slows the other (bench/README.md has the measurement).
#pragma once

#include <cblas.h>

namespace tls::cpu {

// C = alpha * op(A) op(B) + beta * C, row-major, with explicit leading dimensions.
inline void gemm_tile(bool ta, bool tb, int m, int n, int k, float alpha, const float* a, int lda,
                      const float* b, int ldb, float beta, float* c, int ldc) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n,
              k, alpha, a, lda, b, ldb, beta, c, ldc);
}
inline void gemm_tile(bool ta, bool tb, int m, int n, int k, double alpha, const double* a, int lda,
                      const double* b, int ldb, double beta, double* c, int ldc) {
  cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n,
              k, alpha, a, lda, b, ldb, beta, c, ldc);
}

// Makes OpenBLAS compute on the calling thread from now on (process-wide; the CpuOps
// constructor calls it).
void use_calling_thread_blas();

// While alive, OpenBLAS uses `threads` threads of its own (for measuring its own sgemm rate next
// to the backend, as bench/train_step_bench does); restores the previous count afterwards.
class BlasThreads {
 public:
  explicit BlasThreads(int threads);
  ~BlasThreads();
  BlasThreads(const BlasThreads&) = delete;
  BlasThreads& operator=(const BlasThreads&) = delete;

 private:
  int previous_;
};

}  // namespace tls::cpu
