// exp over a row of attention scores, the innermost loop of both attention kernels' softmaxes.
// The float version runs eight lanes at a time where the CPU has AVX2 and FMA (chosen once at
// run time, so the binary still runs on older x86); libm's scalar expf was 5% of a long-sequence
// training step.
#pragma once

#include <cstdint>
#include <vector>

namespace tls::cpu {

// x[j] <- exp(x[j] - shift) for j < n; returns the sum of the results, accumulated in double.
// The float version is within 2 ulp of exp and gives 0 below about -87.3 (under float's normal
// range), where expf gives a denormal or 0.
double exp_shifted(float* x, int64_t n, float shift);
double exp_shifted(double* x, int64_t n, double shift);

// Whether exp_shifted(float*) runs vector lanes (AVX2 or AVX-512) on this CPU.
bool exp_shifted_is_vectorised();

// For tests: exp_shifted(float*) on given lanes (std::logic_error where the CPU lacks them), and
// the lanes this CPU has. exp_shifted itself takes the widest.
enum class ExpLanes { libm, avx2, avx512 };
double exp_shifted_on(ExpLanes lanes, float* x, int64_t n, float shift);
std::vector<ExpLanes> exp_lanes_available();

}  // namespace tls::cpu
