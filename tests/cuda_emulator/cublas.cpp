// The CUDA emulator's cuBLAS (see README.md): column-major GEMM with cuBLAS's argument rules
// (CUBLAS_STATUS_INVALID_VALUE for negative sizes or leading dimensions below the rows of the
// stored matrix), operands checked to be device memory, products summed in double. TF32 math
// rounds the float32 operands to 10 mantissa bits first, as the tensor cores do; GemmEx takes
// bf16 operands with float32 C and compute type, the one combination the backend uses.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>

#include "emulator_internal.h"
#include "include/cublas_v2.h"

struct cublasContext {
  cudaStream_t stream = nullptr;
  cublasMath_t math = CUBLAS_DEFAULT_MATH;
};

namespace {

float round_to_tf32(float x) {
  uint32_t u = 0;
  std::memcpy(&u, &x, sizeof u);
  if ((u & 0x7f800000u) != 0x7f800000u) u = (u + 0xfffu + ((u >> 13) & 1u)) & ~0x1fffu;
  std::memcpy(&x, &u, sizeof u);
  return x;
}

// Reads element (i, j) of a column-major matrix stored with leading dimension ld.
template <class Load>
struct Operand {
  Load load;
  bool trans;
  int ld;
  double at(int i, int j) const {
    return trans ? load(static_cast<int64_t>(i) * ld + j) : load(static_cast<int64_t>(j) * ld + i);
  }
};

// The checks every GEMM shares; rows/cols of the stored A and B follow from the transpositions.
cublasStatus_t check_gemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m,
                          int n, int k, const void* A, int lda, size_t a_size, const void* B,
                          int ldb, size_t b_size, const void* C, int ldc, size_t c_size) {
  if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
  if ((ta != CUBLAS_OP_N && ta != CUBLAS_OP_T) || (tb != CUBLAS_OP_N && tb != CUBLAS_OP_T) ||
      m < 0 || n < 0 || k < 0)
    return CUBLAS_STATUS_INVALID_VALUE;
  const int a_rows = ta == CUBLAS_OP_N ? m : k, a_cols = ta == CUBLAS_OP_N ? k : m;
  const int b_rows = tb == CUBLAS_OP_N ? k : n, b_cols = tb == CUBLAS_OP_N ? n : k;
  if (lda < std::max(1, a_rows) || ldb < std::max(1, b_rows) || ldc < std::max(1, m))
    return CUBLAS_STATUS_INVALID_VALUE;
  if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
  auto extent = [](int rows, int cols, int ld, size_t size) {
    return rows == 0 || cols == 0
               ? 0
               : (static_cast<size_t>(cols - 1) * static_cast<size_t>(ld) + rows) * size;
  };
  const bool ok = (k == 0 || (tls_emu::is_device_range(A, extent(a_rows, a_cols, lda, a_size)) &&
                              tls_emu::is_device_range(B, extent(b_rows, b_cols, ldb, b_size)))) &&
                  tls_emu::is_device_range(C, extent(m, n, ldc, c_size));
  if (!ok)
    tls_emu::device_fault("a cuBLAS GEMM operand (m=" + std::to_string(m) +
                          " n=" + std::to_string(n) + " k=" + std::to_string(k) +
                          ") is not wholly inside device memory");
  return CUBLAS_STATUS_SUCCESS;
}

template <class T, class LA, class LB>
void gemm(int m, int n, int k, double alpha, const Operand<LA>& a, const Operand<LB>& b,
          double beta, T* C, int ldc) {
  tls_emu::DeviceAccess access;
  for (int j = 0; j < n; ++j)
    for (int i = 0; i < m; ++i) {
      double s = 0;
      for (int l = 0; l < k; ++l) s += a.at(i, l) * b.at(l, j);
      T& c = C[static_cast<int64_t>(j) * ldc + i];
      c = static_cast<T>(beta == 0 ? alpha * s : alpha * s + beta * static_cast<double>(c));
    }
}

}  // namespace

cublasStatus_t cublasCreate(cublasHandle_t* handle) {
  *handle = new cublasContext;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasDestroy(cublasHandle_t handle) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  delete handle;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetStream(cublasHandle_t handle, cudaStream_t stream) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  handle->stream = stream;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetMathMode(cublasHandle_t handle, cublasMath_t mode) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  handle->math = mode;
  return CUBLAS_STATUS_SUCCESS;
}

const char* cublasGetStatusName(cublasStatus_t status) {
  switch (status) {
    case CUBLAS_STATUS_SUCCESS:
      return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED:
      return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_INVALID_VALUE:
      return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_NOT_SUPPORTED:
      return "CUBLAS_STATUS_NOT_SUPPORTED";
    default:
      return "CUBLAS_STATUS_UNKNOWN";
  }
}

const char* cublasGetStatusString(cublasStatus_t status) {
  switch (status) {
    case CUBLAS_STATUS_SUCCESS:
      return "success";
    case CUBLAS_STATUS_NOT_INITIALIZED:
      return "the library was not initialized";
    case CUBLAS_STATUS_INVALID_VALUE:
      return "an invalid numeric value was used as an argument";
    case CUBLAS_STATUS_NOT_SUPPORTED:
      return "the functionality requested is not supported";
    default:
      return "unknown error";
  }
}

cublasStatus_t cublasSgemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m,
                           int n, int k, const float* alpha, const float* A, int lda,
                           const float* B, int ldb, const float* beta, float* C, int ldc) {
  const cublasStatus_t st = check_gemm(h, ta, tb, m, n, k, A, lda, 4, B, ldb, 4, C, ldc, 4);
  if (st != CUBLAS_STATUS_SUCCESS || m == 0 || n == 0) return st;
  const bool tf32 = h->math == CUBLAS_TF32_TENSOR_OP_MATH;
  auto load = [tf32](const float* p) {
    return [p, tf32](int64_t i) { return static_cast<double>(tf32 ? round_to_tf32(p[i]) : p[i]); };
  };
  gemm(m, n, k, *alpha, Operand{load(A), ta == CUBLAS_OP_T, lda},
       Operand{load(B), tb == CUBLAS_OP_T, ldb}, *beta, C, ldc);
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasDgemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m,
                           int n, int k, const double* alpha, const double* A, int lda,
                           const double* B, int ldb, const double* beta, double* C, int ldc) {
  const cublasStatus_t st = check_gemm(h, ta, tb, m, n, k, A, lda, 8, B, ldb, 8, C, ldc, 8);
  if (st != CUBLAS_STATUS_SUCCESS || m == 0 || n == 0) return st;
  auto load = [](const double* p) { return [p](int64_t i) { return p[i]; }; };
  gemm(m, n, k, *alpha, Operand{load(A), ta == CUBLAS_OP_T, lda},
       Operand{load(B), tb == CUBLAS_OP_T, ldb}, *beta, C, ldc);
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m,
                            int n, int k, const void* alpha, const void* A, cudaDataType Atype,
                            int lda, const void* B, cudaDataType Btype, int ldb, const void* beta,
                            void* C, cudaDataType Ctype, int ldc, cublasComputeType_t compute,
                            cublasGemmAlgo_t) {
  // Same-type float32 / float64 products (bench/gpu_bench's reference rates) as the plain GEMMs.
  const bool f32 = compute == CUBLAS_COMPUTE_32F || compute == CUBLAS_COMPUTE_32F_PEDANTIC ||
                   compute == CUBLAS_COMPUTE_32F_FAST_TF32;
  if (Atype == CUDA_R_32F && Btype == CUDA_R_32F && Ctype == CUDA_R_32F && f32) {
    const cublasMath_t saved = h ? h->math : CUBLAS_DEFAULT_MATH;
    if (h)
      h->math = compute == CUBLAS_COMPUTE_32F_FAST_TF32 ? CUBLAS_TF32_TENSOR_OP_MATH
                                                        : CUBLAS_DEFAULT_MATH;
    const cublasStatus_t st =
        cublasSgemm(h, ta, tb, m, n, k, static_cast<const float*>(alpha),
                    static_cast<const float*>(A), lda, static_cast<const float*>(B), ldb,
                    static_cast<const float*>(beta), static_cast<float*>(C), ldc);
    if (h) h->math = saved;
    return st;
  }
  if (Atype == CUDA_R_64F && Btype == CUDA_R_64F && Ctype == CUDA_R_64F &&
      compute == CUBLAS_COMPUTE_64F)
    return cublasDgemm(h, ta, tb, m, n, k, static_cast<const double*>(alpha),
                       static_cast<const double*>(A), lda, static_cast<const double*>(B), ldb,
                       static_cast<const double*>(beta), static_cast<double*>(C), ldc);
  if (Atype != CUDA_R_16BF || Btype != CUDA_R_16BF || Ctype != CUDA_R_32F || !f32 ||
      compute == CUBLAS_COMPUTE_32F_FAST_TF32)
    return CUBLAS_STATUS_NOT_SUPPORTED;  // combinations nothing here uses
  const cublasStatus_t st = check_gemm(h, ta, tb, m, n, k, A, lda, 2, B, ldb, 2, C, ldc, 4);
  if (st != CUBLAS_STATUS_SUCCESS || m == 0 || n == 0) return st;
  auto load = [](const void* p) {
    const auto* b = static_cast<const __nv_bfloat16*>(p);
    return [b](int64_t i) { return static_cast<double>(__bfloat162float(b[i])); };
  };
  gemm(m, n, k, *static_cast<const float*>(alpha), Operand{load(A), ta == CUBLAS_OP_T, lda},
       Operand{load(B), tb == CUBLAS_OP_T, ldb}, *static_cast<const float*>(beta),
       static_cast<float*>(C), ldc);
  return CUBLAS_STATUS_SUCCESS;
}
