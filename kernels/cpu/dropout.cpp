// Dropout of the CPU backend: x *= keep / (1 - p), keep = [u >= p] with u in [0, 1) a
// counter-based uniform of (seed, step, tensor_id, global index) (see DropoutKey and
// kernels/counter_rng.h), so every parallel layout draws the same mask.
#include <string>

#include "kernels/counter_rng.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/dispatch.h"

namespace tls {

void CpuOps::dropout_apply(Tensor& x, double p, const DropoutKey& key) {
  const char* op = "dropout_apply";
  cpu::check_float(op, "x", x);
  if (!(p >= 0.0 && p <= 1.0)) cpu::fail(op, "probability " + std::to_string(p) + " not in [0, 1]");
  if (p == 0.0) return;
  const int64_t rows = x.matrix_rows(), cols = x.matrix_cols();
  if (key.t_local <= 0 || rows % key.t_local != 0 || key.t_offset < 0 || key.b_offset < 0 ||
      key.t_offset + key.t_local > key.t_global || key.col_offset < 0 ||
      (key.cols_global > 0 && key.col_offset + cols > key.cols_global))
    cpu::fail(op, "layout t_local " + std::to_string(key.t_local) + ", t_global " +
                      std::to_string(key.t_global) + ", t_offset " + std::to_string(key.t_offset) +
                      ", b_offset " + std::to_string(key.b_offset) + " does not fit " +
                      cpu::describe("x", x));
  if (p == 1.0) {
    fill(x, 0.0);
    return;
  }
  const int64_t cols_global = key.cols_global > 0 ? key.cols_global : cols;
  const uint64_t k = rng::stream_key(key.seed, key.step, key.tensor_id);
  cpu::dispatch_float(op, x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    T* xp = x.data<T>();
    const T s = static_cast<T>(1.0 / (1.0 - p));
#pragma omp parallel for if (rows * cols >= cpu::kParallelMin)
    for (int64_t i = 0; i < rows; ++i) {
      const int64_t b = i / key.t_local, t = i % key.t_local;
      const int64_t g0 =
          ((b + key.b_offset) * key.t_global + t + key.t_offset) * cols_global + key.col_offset;
      T* row = xp + i * cols;
      for (int64_t j = 0; j < cols; ++j)
        row[j] = rng::uniform(k, static_cast<uint64_t>(g0 + j)) >= p ? row[j] * s : T(0);
    }
  });
}

}  // namespace tls
