// One always-inlined loop, instantiated per target (see vector_layernorm.cpp).
#include "kernels/cpu/vector_adamw.h"

#include <cmath>

namespace tls::cpu {
namespace {

[[gnu::always_inline]] inline void update(float* p, const float* g, float* m, float* v, int64_t n,
                                          const AdamWCoefficients& k) {
  const double b1 = k.beta1, b2 = k.beta2, eps = k.eps, decay = k.decay, step = k.step_size,
               bc2 = k.bc2_sqrt;
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const double gi = static_cast<double>(g[i]);
    const float mi = static_cast<float>(b1 * static_cast<double>(m[i]) + (1.0 - b1) * gi);
    const float vi = static_cast<float>(b2 * static_cast<double>(v[i]) + (1.0 - b2) * gi * gi);
    m[i] = mi;
    v[i] = vi;
    p[i] = static_cast<float>(static_cast<double>(p[i]) * decay -
                              step * static_cast<double>(mi) /
                                  (std::sqrt(static_cast<double>(vi)) / bc2 + eps));
  }
}

#if defined(__x86_64__)
[[gnu::target("avx2,fma")]] void update_avx2(float* p, const float* g, float* m, float* v,
                                             int64_t n, const AdamWCoefficients& k) {
  update(p, g, m, v, n, k);
}
const bool kAvx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif

}  // namespace

void adamw_update(float* p, const float* g, float* m, float* v, int64_t n,
                  const AdamWCoefficients& k) {
#if defined(__x86_64__)
  if (kAvx2) return update_avx2(p, g, m, v, n, k);
#endif
  update(p, g, m, v, n, k);
}

}  // namespace tls::cpu
