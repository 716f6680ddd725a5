// GELU (erf form) over float rows on AVX2 lanes, for the CPU backend's float32 activations
// (kernels/cpu/activation.cpp), vectorised because it runs once per element of every
// feed-forward activation, forward and backward. 1 + erf(u) computed as 1 + erff(u) loses most
// digits for u < -2 to cancellation. Here 1 + erf(u) is erfc(-u) for u < 0 and 2 - erfc(u)
// otherwise, with erfc(z) = t exp(-z^2) exp(P(t)), t = 1 / (1 + z / 2) (a Chebyshev fit, relative
// error 1.1e-7 for every z >= 0), so both GELU and its derivative keep about 1e-6 relative
// accuracy in the negative tail as well.
#pragma once

#include <cstdint>

namespace tls::cpu {

// Only where gelu_is_vectorised() (they throw std::logic_error elsewhere; CpuOps uses libm there).
// y[i] = 0.5 x[i] (1 + erf(x[i] / sqrt 2)).
void gelu_forward_rows(const float* x, float* y, int64_t n);
// dx[i] += dout[i] * gelu'(x[i]), gelu'(x) = 0.5 (1 + erf(x / sqrt 2)) + x exp(-x^2 / 2) / sqrt(2
// pi).
void gelu_backward_rows(const float* x, const float* dout, float* dx, int64_t n);

// Whether this CPU has the AVX2 and FMA the two need.
bool gelu_is_vectorised();

}  // namespace tls::cpu
