// Sinusoidal positional encoding of the CPU backend, in the tensor's own precision T (as
// Transformer-XL computes it): inv_j = 1 / 10000^(2j / d), out[i, j] = sin(pos_i inv_j),
// out[i, d/2 + j] = cos(pos_i inv_j) for j < d/2, d = out's last dimension (even).
#include <cmath>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/dispatch.h"

namespace tls {

void CpuOps::sinusoid_forward(Tensor& out, const std::vector<double>& positions) {
  const char* op = "sinusoid_forward";
  cpu::check_float(op, "out", out);
  const int64_t rows = out.matrix_rows(), d = out.matrix_cols();
  if (rows != static_cast<int64_t>(positions.size()) || d % 2 != 0)
    cpu::fail(op, std::to_string(positions.size()) + " positions for " + cpu::describe("out", out) +
                      " (want one row per position, an even width)");
  const int64_t half = d / 2;
  cpu::dispatch_float(op, out.dtype(), [&](auto tag) {
    using T = decltype(tag);
    std::vector<T> inv(static_cast<size_t>(half));
    for (int64_t j = 0; j < half; ++j)
      inv[j] = T(1) / std::pow(T(10000), static_cast<T>(2 * j) / static_cast<T>(d));
    T* op_data = out.data<T>();
#pragma omp parallel for if (rows * d >= cpu::kParallelMin)
    for (int64_t i = 0; i < rows; ++i) {
      const T pos = static_cast<T>(positions[i]);
      T* row = op_data + i * d;
      for (int64_t j = 0; j < half; ++j) {
        const T a = pos * inv[j];
        row[j] = std::sin(a);
        row[half + j] = std::cos(a);
      }
    }
  });
}

}  // namespace tls
