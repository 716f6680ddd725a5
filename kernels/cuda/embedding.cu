// Token embedding of the CUDA backend: out[i, :] = table[tokens[i], :] * scale for table [V, D],
// int32 tokens (R of them) and out [R, D]; backward dtable[tokens[i], :] += scale * dout[i, :].
// The backward is deterministic (no atomics): the token ids come to the host, which groups the
// positions by token (ascending within a token); one thread per (token, feature) then sums its
// rows in that order and adds the sum once. Token ids outside [0, V) raise a tls::Error naming
// the first offending position found (forward: a device flag read back; backward: checked on
// the host before anything is written).
#include <algorithm>
#include <numeric>
#include <vector>

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

// groups [n_groups + 1] offsets into order (positions grouped by token), ids the groups' tokens.
template <class T>
__global__ void embedding_backward_kernel(T* dtable, const T* dout, const int32_t* order,
                                          const int32_t* groups, const int32_t* ids,
                                          int64_t n_groups, int64_t d, T scale) {
  TLS_GRID_LOOP(k, n_groups * d) {
    const int64_t g = k / d, j = k % d;
    T sum = T(0);
    for (int32_t at = groups[g]; at < groups[g + 1]; ++at)
      sum += dout[static_cast<int64_t>(order[at]) * d + j];
    dtable[static_cast<int64_t>(ids[g]) * d + j] += sum * scale;
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
  // The positions grouped by token, ascending within each (a stable sort on the host).
  std::vector<int32_t> tok(static_cast<size_t>(rows));
  TLS_CUDA_CHECK(cudaMemcpyAsync(tok.data(), tokens.data<int32_t>(), sizeof(int32_t) * tok.size(),
                                 cudaMemcpyDeviceToHost, stream_));
  TLS_CUDA_CHECK(cudaStreamSynchronize(stream_));
  for (size_t i = 0; i < tok.size(); ++i)
    if (tok[i] < 0 || tok[i] >= vocab)
      cuda::fail(op, "a token id at position " + std::to_string(i) + " is out of range for " +
                         std::to_string(vocab) + " classes");
  std::vector<int32_t> order(tok.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int32_t a, int32_t b) { return tok[a] < tok[b]; });
  std::vector<int32_t> groups, ids;  // packed after order: [order | groups | ids]
  for (size_t k = 0; k < order.size(); ++k)
    if (k == 0 || tok[order[k]] != tok[order[k - 1]]) {
      groups.push_back(static_cast<int32_t>(k));
      ids.push_back(tok[order[k]]);
    }
  groups.push_back(static_cast<int32_t>(order.size()));
  const int64_t n_groups = static_cast<int64_t>(ids.size());
  std::vector<int32_t> packed(order);
  packed.insert(packed.end(), groups.begin(), groups.end());
  packed.insert(packed.end(), ids.begin(), ids.end());
  int32_t* dev = nullptr;
  TLS_CUDA_CHECK(
      cudaMallocAsync(reinterpret_cast<void**>(&dev), sizeof(int32_t) * packed.size(), stream_));
  // From pageable memory: the copy has read `packed` when it returns.
  TLS_CUDA_CHECK(cudaMemcpyAsync(dev, packed.data(), sizeof(int32_t) * packed.size(),
                                 cudaMemcpyHostToDevice, stream_));
  cuda::dispatch_float(op, dtable.dtype(), [&](auto tag) {
    using T = decltype(tag);
    embedding_backward_kernel<T><<<cuda::blocks_for(n_groups * d), cuda::kThreads, 0, stream_>>>(
        dtable.data<T>(), dout.data<T>(), dev, dev + rows, dev + rows + n_groups + 1, n_groups, d,
        static_cast<T>(scale));
    TLS_CUDA_LAUNCHED("embedding_backward_kernel");
  });
  TLS_CUDA_CHECK(cudaFreeAsync(dev, stream_));
}

}  // namespace tls
