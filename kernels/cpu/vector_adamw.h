// AdamW's float32 update loop (kernels/cpu/adamw.cpp), compiled for AVX2+FMA lanes (chosen once
// at run time) and for baseline x86-64; the arithmetic per element is the same double arithmetic
// either way. Vectorised because it runs over every parameter and both moments on every update.
#pragma once

#include <cstdint>

namespace tls::cpu {

struct AdamWCoefficients {
  double beta1, beta2, eps;
  double decay;      // 1 - lr weight_decay
  double step_size;  // lr / (1 - beta1^step)
  double bc2_sqrt;   // sqrt(1 - beta2^step)
};

// For i < n: m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2 (both stored as float);
// p = p decay - step_size m / (sqrt(v) / bc2_sqrt + eps), with m and v as stored.
void adamw_update(float* p, const float* g, float* m, float* v, int64_t n,
                  const AdamWCoefficients& k);

}  // namespace tls::cpu
