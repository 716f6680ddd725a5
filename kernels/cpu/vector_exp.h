// exp over a row of attention scores, the innermost loop of both attention kernels' softmaxes.
// The float version runs eight lanes at a time where the CPU has AVX2 and FMA (chosen once at
// run time, so the binary still runs on older x86); libm's scalar expf was 5% of a long-sequence
// training step.
#pragma once

#include <cstdint>

namespace tls::cpu {

// x[j] <- exp(x[j] - shift) for j < n; returns the sum of the results, accumulated in double.
// The float version is within 2 ulp of exp and gives 0 below about -87.3 (under float's normal
// range), where expf gives a denormal or 0.
double exp_shifted(float* x, int64_t n, float shift);
double exp_shifted(double* x, int64_t n, double shift);

// Whether exp_shifted(float*) runs the AVX2 lanes on this CPU (for tests and benchmarks).
bool exp_shifted_is_vectorised();

}  // namespace tls::cpu
