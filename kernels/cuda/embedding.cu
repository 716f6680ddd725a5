// Token embedding of the CUDA backend: out[i, :] = table[tokens[i], :] * scale for table [V, D],
// int32 tokens (R of them) and out [R, D]; backward dtable[tokens[i], :] += scale * dout[i, :]
// with atomicAdd (rows sharing a token add in an unspecified order). Token ids outside [0, V)
// raise a tls::Error naming the first offending position found (a device flag read back).
#include "kernels/cuda/common.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/device_util.cuh"

namespace tls {

namespace {

template <class T>
__global__ void embedding_forward_kernel(T* out, const T* table, const int32_t* tokens,
                                         int64_t rows, int64_t d, int64_t vocab, T scale,
                                         int* flag) {
  TLS_GRID_LOOP(k, rows * d) {
    const int64_t i = k / d, j = k % d;
    const int32_t t = tokens[i];
    if (t < 0 || t >= vocab) {
      if (j == 0) atomicCAS(flag, -1, static_cast<int>(i));
      out[k] = T(0);
      continue;
    }
    out[k] = table[static_cast<int64_t>(t) * d + j] * scale;
  }
}

template <class T>
__global__ void embedding_backward_kernel(T* dtable, const T* dout, const int32_t* tokens,
                                          int64_t rows, int64_t d, int64_t vocab, T scale,
                                          int* flag) {
  TLS_GRID_LOOP(k, rows * d) {
    const int64_t i = k / d, j = k % d;
    const int32_t t = tokens[i];
    if (t < 0 || t >= vocab) {
      if (j == 0) atomicCAS(flag, -1, static_cast<int>(i));
      continue;
    }
    atomicAdd(dtable + static_cast<int64_t>(t) * d + j, dout[k] * scale);
  }
}

void check_embedding(const char* op, const char* tn, const Tensor& table, const char* rn,
                     const Tensor& rows, const Tensor& tokens) {
  cuda::check_float(op, tn, table);
  cuda::check_like(op, tn, table, rn, rows);
  cuda::check_i32(op, "tokens", tokens);
  if (table.rank() != 2 || rows.matrix_cols() != table.dim(1) ||
      rows.matrix_rows() != tokens.numel())
    cuda::fail(op, "shape mismatch: " + cuda::describe(tn, table) + ", " +
                       cuda::describe(rn, rows) + ", " + cuda::describe("tokens", tokens) +
                       " (want table [V, D], tokens [R], rows [R, D])");
}

}  // namespace

void CudaOps::embedding_forward(Tensor& out, const Tensor& table, const Tensor& tokens,
                                double scale) {
  const char* op = "embedding_forward";
  check_embedding(op, "table", table, "out", out, tokens);
  const int64_t rows = tokens.numel(), d = table.dim(1), vocab = table.dim(0);
  if (rows * d == 0) return;
  activate();
  TLS_CUDA_CHECK(cudaMemsetAsync(index_flag_, 0xff, sizeof(int), stream_));
  cuda::dispatch_float(op, table.dtype(), [&](auto tag) {
    using T = decltype(tag);
    embedding_forward_kernel<T><<<cuda::blocks_for(rows * d), cuda::kThreads, 0, stream_>>>(
        out.data<T>(), table.data<T>(), tokens.data<int32_t>(), rows, d, vocab,
        static_cast<T>(scale), index_flag_);
    TLS_CUDA_LAUNCHED("embedding_forward_kernel");
  });
  check_index_flag(op, "a token id", vocab);
}

void CudaOps::embedding_backward(Tensor& dtable, const Tensor& dout, const Tensor& tokens,
                                 double scale) {
  const char* op = "embedding_backward";
  check_embedding(op, "dtable", dtable, "dout", dout, tokens);
  const int64_t rows = tokens.numel(), d = dtable.dim(1), vocab = dtable.dim(0);
  if (rows * d == 0) return;
  activate();
  TLS_CUDA_CHECK(cudaMemsetAsync(index_flag_, 0xff, sizeof(int), stream_));
  cuda::dispatch_float(op, dtable.dtype(), [&](auto tag) {
    using T = decltype(tag);
    embedding_backward_kernel<T><<<cuda::blocks_for(rows * d), cuda::kThreads, 0, stream_>>>(
        dtable.data<T>(), dout.data<T>(), tokens.data<int32_t>(), rows, d, vocab,
        static_cast<T>(scale), index_flag_);
    TLS_CUDA_LAUNCHED("embedding_backward_kernel");
  });
  check_index_flag(op, "a token id", vocab);
}

}  // namespace tls
