// exp over a row of attention scores, the innermost loop of both attention kernels' softmaxes.
// The float version runs eight lanes at a time where the CPU has AVX2 and FMA (chosen once at
// run time, so the binary still runs on older x86): it runs once per attention score, forward
// and backward, which makes it the hottest elementwise loop of a long-sequence step.
#pragma once

#include <cstdint>
#include <vector>

namespace tls::cpu {

// x[j] <- exp(x[j] - shift) for j < n; returns the sum of the results, accumulated in double.
// The float version is within 2 ulp of exp and gives 0 below about -87.3 (under float's normal
// range), where expf gives a denormal or 0.
double exp_shifted(float* x, int64_t n, float shift);
double exp_shifted(double* x, int64_t n, double shift);

// The attention backward's row pass over recomputed scores: p[j] <- exp(p[j] - lse) (the
// probabilities) and dp[j] <- p[j] (dp[j] - delta) (the scores' gradient), j < n. One pass
// instead of an exp pass and a gradient pass; the float version computes in float on the same
// lanes as exp_shifted.
void softmax_backward_row(float* p, float* dp, int64_t n, float lse, float delta);
void softmax_backward_row(double* p, double* dp, int64_t n, double lse, double delta);

// Whether exp_shifted(float*) runs vector lanes (AVX2 or AVX-512) on this CPU.
bool exp_shifted_is_vectorised();

// For tests: exp_shifted(float*) on given lanes (std::logic_error where the CPU lacks them), and
// the lanes this CPU has. exp_shifted itself takes the widest.
enum class ExpLanes { libm, avx2, avx512 };
double exp_shifted_on(ExpLanes lanes, float* x, int64_t n, float shift);
void softmax_backward_row_on(ExpLanes lanes, float* p, float* dp, int64_t n, float lse,
                             float delta);
std::vector<ExpLanes> exp_lanes_available();

}  // namespace tls::cpu
