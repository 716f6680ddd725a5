// Token embedding of the CPU backend: out[i, :] = table[tokens[i], :] * scale for table [V, D],
// int32 tokens (R of them) and out [R, D]; backward dtable[tokens[i], :] += scale * dout[i, :].
// Token ids are checked first (0 <= id < V). The backward splits the work by columns, so rows
// sharing a token never race and the sum order is fixed.
#include <algorithm>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/dispatch.h"

namespace tls {

namespace {

// Checks table/rows/tokens and every token id; returns the ids.
const int32_t* check_embedding(const char* op, const char* tn, const Tensor& table, const char* rn,
                               const Tensor& rows, const Tensor& tokens) {
  cpu::check_float(op, tn, table);
  cpu::check_like(op, tn, table, rn, rows);
  cpu::check_i32(op, "tokens", tokens);
  if (table.rank() != 2 || rows.matrix_cols() != table.dim(1) ||
      rows.matrix_rows() != tokens.numel())
    cpu::fail(op, "shape mismatch: " + cpu::describe(tn, table) + ", " + cpu::describe(rn, rows) +
                      ", " + cpu::describe("tokens", tokens) +
                      " (want table [V, D], tokens [R], rows [R, D])");
  const int32_t* tp = tokens.data<int32_t>();
  const int64_t vocab = table.dim(0);
  for (int64_t i = 0; i < tokens.numel(); ++i)
    if (tp[i] < 0 || tp[i] >= vocab)
      cpu::fail(op, "token id " + std::to_string(tp[i]) + " at position " + std::to_string(i) +
                        " is out of range for a vocabulary of " + std::to_string(vocab));
  return tp;
}

}  // namespace

void CpuOps::embedding_forward(Tensor& out, const Tensor& table, const Tensor& tokens,
                               double scale) {
  const int32_t* tp = check_embedding("embedding_forward", "table", table, "out", out, tokens);
  const int64_t rows = tokens.numel(), d = table.dim(1);
  cpu::dispatch_float("embedding_forward", table.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* tab = table.data<T>();
    T* op = out.data<T>();
    const T s = static_cast<T>(scale);
#pragma omp parallel for if (rows * d >= cpu::kParallelMin)
    for (int64_t i = 0; i < rows; ++i) {
      const T* src = tab + static_cast<int64_t>(tp[i]) * d;
      T* dst = op + i * d;
      for (int64_t j = 0; j < d; ++j) dst[j] = src[j] * s;
    }
  });
}

void CpuOps::embedding_backward(Tensor& dtable, const Tensor& dout, const Tensor& tokens,
                                double scale) {
  const int32_t* tp = check_embedding("embedding_backward", "dtable", dtable, "dout", dout, tokens);
  const int64_t rows = tokens.numel(), d = dtable.dim(1);
  constexpr int64_t kBlock = 64;  // columns per task
  const int64_t n_blocks = (d + kBlock - 1) / kBlock;
  cpu::dispatch_float("embedding_backward", dtable.dtype(), [&](auto tag) {
    using T = decltype(tag);
    T* tab = dtable.data<T>();
    const T* gp = dout.data<T>();
    const T s = static_cast<T>(scale);
#pragma omp parallel for if (rows * d >= cpu::kParallelMin)
    for (int64_t blk = 0; blk < n_blocks; ++blk) {
      const int64_t j0 = blk * kBlock, j1 = std::min(d, j0 + kBlock);
      for (int64_t i = 0; i < rows; ++i) {
        T* dst = tab + static_cast<int64_t>(tp[i]) * d;
        const T* src = gp + i * d;
        for (int64_t j = j0; j < j1; ++j) dst[j] += src[j] * s;
      }
    }
  });
}

}  // namespace tls
