// expf on eight AVX2 lanes, for the vectorised loops of the CPU backend (vector_exp.cpp,
// vector_gelu.cpp): a Cephes-style expf (range reduction by ln 2, a degree-6 polynomial on
// |r| <= ln2 / 2, the exponent put in with an integer add), within 2 ulp of exp, 0 below about
// -87.3 (under float's normal range, where expf gives a denormal or 0). Callers must run it only
// where the CPU has AVX2 and FMA (__builtin_cpu_supports), from functions with the same target.
#pragma once

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define TLS_HAVE_X86 1

namespace tls::cpu {

__attribute__((target("avx2,fma"))) inline __m256 exp_lanes_avx2(__m256 v) {
  const __m256 lo = _mm256_set1_ps(-87.33654f), hi = _mm256_set1_ps(88.72283f);
  const __m256 log2e = _mm256_set1_ps(1.44269504088896341f);
  const __m256 ln2_hi = _mm256_set1_ps(0.693359375f), ln2_lo = _mm256_set1_ps(-2.12194440e-4f);
  const __m256 c0 = _mm256_set1_ps(1.9875691500e-4f), c1 = _mm256_set1_ps(1.3981999507e-3f),
               c2 = _mm256_set1_ps(8.3334519073e-3f), c3 = _mm256_set1_ps(4.1665795894e-2f),
               c4 = _mm256_set1_ps(1.6666665459e-1f), c5 = _mm256_set1_ps(5.0000001201e-1f);
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 underflow = _mm256_cmp_ps(v, lo, _CMP_LT_OQ);
  const __m256 a = _mm256_min_ps(_mm256_max_ps(v, lo), hi);
  const __m256 k =
      _mm256_round_ps(_mm256_mul_ps(a, log2e), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(k, ln2_hi, a);
  r = _mm256_fnmadd_ps(k, ln2_lo, r);
  __m256 p = _mm256_fmadd_ps(c0, r, c1);
  p = _mm256_fmadd_ps(p, r, c2);
  p = _mm256_fmadd_ps(p, r, c3);
  p = _mm256_fmadd_ps(p, r, c4);
  p = _mm256_fmadd_ps(p, r, c5);
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, one));
  // 2^k as a float: k + 127 in the exponent bits (k is in [-126, 128] after the clamp; 128 only
  // for inputs within rounding of the upper limit, where expf overflows anyway).
  const __m256i e =
      _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(126)), 23);
  const __m256 y = _mm256_mul_ps(_mm256_mul_ps(p, _mm256_castsi256_ps(e)), _mm256_set1_ps(2.0f));
  return _mm256_andnot_ps(underflow, y);
}

}  // namespace tls::cpu

#endif
