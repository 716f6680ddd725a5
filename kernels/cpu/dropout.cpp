// Dropout of the CPU backend: x *= keep / (1 - p), keep = [u >= p] with u in [0, 1) a
// counter-based hash of (seed, step, tensor_id, global index) (see DropoutKey), so every
// parallel layout draws the same mask:
//   k = mix(mix(mix(seed + G) ^ step) ^ tensor_id),  u = (mix(k + (index + 1) G) >> 11) * 2^-53,
// mix = the splitmix64 finaliser, G = 0x9e3779b97f4a7c15 (the splitmix64 stream of seed k).
#include <string>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/dispatch.h"

namespace tls {

namespace {

constexpr uint64_t kGolden = 0x9e3779b97f4a7c15ULL;

inline uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

inline double uniform(uint64_t key, uint64_t index) {
  return static_cast<double>(mix64(key + (index + 1) * kGolden) >> 11) * 0x1.0p-53;
}

}  // namespace

void CpuOps::dropout_apply(Tensor& x, double p, const DropoutKey& key) {
  const char* op = "dropout_apply";
  cpu::check_float(op, "x", x);
  if (!(p >= 0.0 && p <= 1.0)) cpu::fail(op, "probability " + std::to_string(p) + " not in [0, 1]");
  if (p == 0.0) return;
  const int64_t rows = cpu::mat_rows(x), cols = x.matrix_cols();
  if (key.t_local <= 0 || rows % key.t_local != 0 || key.t_offset < 0 || key.b_offset < 0 ||
      key.t_offset + key.t_local > key.t_global)
    cpu::fail(op, "layout t_local " + std::to_string(key.t_local) + ", t_global " +
                      std::to_string(key.t_global) + ", t_offset " + std::to_string(key.t_offset) +
                      ", b_offset " + std::to_string(key.b_offset) + " does not fit " +
                      cpu::describe("x", x));
  if (p == 1.0) {
    fill(x, 0.0);
    return;
  }
  const uint64_t k = mix64(mix64(mix64(key.seed + kGolden) ^ key.step) ^ key.tensor_id);
  cpu::dispatch_float(op, x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    T* xp = x.data<T>();
    const T s = static_cast<T>(1.0 / (1.0 - p));
#pragma omp parallel for if (rows * cols >= cpu::kParallelMin)
    for (int64_t i = 0; i < rows; ++i) {
      const int64_t b = i / key.t_local, t = i % key.t_local;
      const int64_t g0 = ((b + key.b_offset) * key.t_global + t + key.t_offset) * cols;
      T* row = xp + i * cols;
      for (int64_t j = 0; j < cols; ++j)
        row[j] = uniform(k, static_cast<uint64_t>(g0 + j)) >= p ? row[j] * s : T(0);
    }
  });
}

}  // namespace tls
