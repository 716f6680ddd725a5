// exp_shifted: expf on AVX-512 or AVX2 lanes (kernels/cpu/exp_lanes_avx512.h, exp_lanes_avx2.h)
// where the CPU has them, libm elsewhere. On AVX-512 the row's tail runs on masked lanes too (a
// softmax row of the compressed part ends anywhere, and libm's expf on up to 7 tail elements per
// row costs as much as the vector part of a short row).
#include "kernels/cpu/vector_exp.h"

#include <cmath>
#include <stdexcept>
#include <vector>

#include "kernels/cpu/exp_lanes_avx512.h"

namespace tls::cpu {
namespace {

template <class T>
double exp_shifted_libm(T* x, int64_t n, T shift) {
  double total = 0;
  for (int64_t j = 0; j < n; ++j) {
    x[j] = std::exp(x[j] - shift);
    total += x[j];
  }
  return total;
}

template <class T>
void softmax_backward_row_scalar(T* p, T* dp, int64_t n, T lse, T delta) {
  for (int64_t j = 0; j < n; ++j) {
    p[j] = std::exp(p[j] - lse);
    dp[j] = p[j] * (dp[j] - delta);
  }
}

#ifdef TLS_HAVE_X86
__attribute__((target("avx2,fma"))) void softmax_backward_row_avx2(float* p, float* dp, int64_t n,
                                                                   float lse, float delta) {
  const __m256 vlse = _mm256_set1_ps(lse), vdelta = _mm256_set1_ps(delta);
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m256 y = exp_lanes_avx2(_mm256_sub_ps(_mm256_loadu_ps(p + j), vlse));
    _mm256_storeu_ps(p + j, y);
    _mm256_storeu_ps(dp + j, _mm256_mul_ps(y, _mm256_sub_ps(_mm256_loadu_ps(dp + j), vdelta)));
  }
  softmax_backward_row_scalar(p + j, dp + j, n - j, lse, delta);
}

__attribute__((target("avx2,fma"))) double exp_shifted_avx2(float* x, int64_t n, float shift) {
  const __m256 vshift = _mm256_set1_ps(shift);
  __m256d sum_lo = _mm256_setzero_pd(), sum_hi = _mm256_setzero_pd();
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m256 y = exp_lanes_avx2(_mm256_sub_ps(_mm256_loadu_ps(x + j), vshift));
    _mm256_storeu_ps(x + j, y);
    sum_lo = _mm256_add_pd(sum_lo, _mm256_cvtps_pd(_mm256_castps256_ps128(y)));
    sum_hi = _mm256_add_pd(sum_hi, _mm256_cvtps_pd(_mm256_extractf128_ps(y, 1)));
  }
  alignas(32) double lanes[4];
  _mm256_store_pd(lanes, _mm256_add_pd(sum_lo, sum_hi));
  double total = lanes[0] + lanes[1] + lanes[2] + lanes[3];
  return total + exp_shifted_libm(x + j, n - j, shift);
}

// GCC 12 warns inside its own avx512fintrin.h (the _mm512_undefined_ps of the unmasked
// intrinsics); the warning is about the header, not this code.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
__attribute__((target("avx512f"))) inline __m512 exp_add_lanes(const float* in, float* out,
                                                               __m512 vshift, __m512d& sum_lo,
                                                               __m512d& sum_hi) {
  const __m512 y = exp_lanes_avx512(_mm512_sub_ps(_mm512_loadu_ps(in), vshift));
  _mm512_storeu_ps(out, y);
  sum_lo = _mm512_add_pd(sum_lo, _mm512_cvtps_pd(_mm512_castps512_ps256(y)));
  sum_hi = _mm512_add_pd(
      sum_hi, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(y), 1))));
  return y;
}

__attribute__((target("avx512f"))) double exp_shifted_avx512(float* x, int64_t n, float shift) {
  const __m512 vshift = _mm512_set1_ps(shift);
  __m512d sum_lo = _mm512_setzero_pd(), sum_hi = _mm512_setzero_pd();
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) exp_add_lanes(x + j, x + j, vshift, sum_lo, sum_hi);
  double tail_total = 0;
  if (j < n) {  // the tail through a buffer whose unused lanes give exactly 0 (exp of -inf)
    alignas(64) float buf[16];
    const int64_t rest = n - j;
    for (int k = 0; k < 16; ++k) buf[k] = k < rest ? x[j + k] : -INFINITY;
    __m512d lo = _mm512_setzero_pd(), hi = _mm512_setzero_pd();
    exp_add_lanes(buf, buf, _mm512_set1_ps(shift), lo, hi);
    for (int64_t k = 0; k < rest; ++k) x[j + k] = buf[k];
    tail_total = _mm512_reduce_add_pd(_mm512_add_pd(lo, hi));
  }
  return _mm512_reduce_add_pd(_mm512_add_pd(sum_lo, sum_hi)) + tail_total;
}

// The tail runs on masked lanes: the unused ones load -inf, whose exp is 0, and are not stored.
__attribute__((target("avx512f"))) void softmax_backward_row_avx512(float* p, float* dp, int64_t n,
                                                                    float lse, float delta) {
  const __m512 vlse = _mm512_set1_ps(lse), vdelta = _mm512_set1_ps(delta);
  const __m512 neg_inf = _mm512_set1_ps(-INFINITY);
  for (int64_t j = 0; j < n; j += 16) {
    const int64_t rest = n - j;
    const __mmask16 m = rest >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << rest) - 1);
    const __m512 y = exp_lanes_avx512(_mm512_sub_ps(_mm512_mask_loadu_ps(neg_inf, m, p + j), vlse));
    _mm512_mask_storeu_ps(p + j, m, y);
    const __m512 g = _mm512_maskz_loadu_ps(m, dp + j);
    _mm512_mask_storeu_ps(dp + j, m, _mm512_mul_ps(y, _mm512_sub_ps(g, vdelta)));
  }
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

const bool kAvx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
const bool kAvx512 = kAvx2 && __builtin_cpu_supports("avx512f");
#else
const bool kAvx2 = false;
const bool kAvx512 = false;
#endif

bool supports(ExpLanes lanes) {
  switch (lanes) {
    case ExpLanes::libm:
      return true;
    case ExpLanes::avx2:
      return kAvx2;
    case ExpLanes::avx512:
      return kAvx512;
  }
  return false;
}

}  // namespace

double exp_shifted(float* x, int64_t n, float shift) {
#ifdef TLS_HAVE_X86
  if (kAvx512) return exp_shifted_avx512(x, n, shift);
  if (kAvx2) return exp_shifted_avx2(x, n, shift);
#endif
  return exp_shifted_libm(x, n, shift);
}

double exp_shifted_on(ExpLanes lanes, float* x, int64_t n, float shift) {
  if (!supports(lanes))
    throw std::logic_error("exp_shifted_on: this CPU lacks the lanes asked for");
#ifdef TLS_HAVE_X86
  if (lanes == ExpLanes::avx512) return exp_shifted_avx512(x, n, shift);
  if (lanes == ExpLanes::avx2) return exp_shifted_avx2(x, n, shift);
#endif
  return exp_shifted_libm(x, n, shift);
}

void softmax_backward_row(float* p, float* dp, int64_t n, float lse, float delta) {
#ifdef TLS_HAVE_X86
  if (kAvx512) return softmax_backward_row_avx512(p, dp, n, lse, delta);
  if (kAvx2) return softmax_backward_row_avx2(p, dp, n, lse, delta);
#endif
  softmax_backward_row_scalar(p, dp, n, lse, delta);
}

void softmax_backward_row(double* p, double* dp, int64_t n, double lse, double delta) {
  softmax_backward_row_scalar(p, dp, n, lse, delta);
}

void softmax_backward_row_on(ExpLanes lanes, float* p, float* dp, int64_t n, float lse,
                             float delta) {
  if (!supports(lanes))
    throw std::logic_error("softmax_backward_row_on: this CPU lacks the lanes asked for");
#ifdef TLS_HAVE_X86
  if (lanes == ExpLanes::avx512) return softmax_backward_row_avx512(p, dp, n, lse, delta);
  if (lanes == ExpLanes::avx2) return softmax_backward_row_avx2(p, dp, n, lse, delta);
#endif
  softmax_backward_row_scalar(p, dp, n, lse, delta);
}

std::vector<ExpLanes> exp_lanes_available() {
  std::vector<ExpLanes> out;
  for (ExpLanes l : {ExpLanes::libm, ExpLanes::avx2, ExpLanes::avx512})
    if (supports(l)) out.push_back(l);
  return out;
}

double exp_shifted(double* x, int64_t n, double shift) { return exp_shifted_libm(x, n, shift); }

bool exp_shifted_is_vectorised() { return kAvx2; }

}  // namespace tls::cpu
