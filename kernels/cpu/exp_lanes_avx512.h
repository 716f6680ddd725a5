// expf on sixteen AVX-512 lanes: exp_lanes_avx2 (kernels/cpu/exp_lanes_avx2.h) operation for
// operation, so both give the same float for the same input. Callers must run it only where the
// CPU has AVX-512F (__builtin_cpu_supports), from functions with the same target.
#pragma once

#include "kernels/cpu/exp_lanes_avx2.h"

#ifdef TLS_HAVE_X86

namespace tls::cpu {

__attribute__((target("avx512f"))) inline __m512 exp_lanes_avx512(__m512 v) {
  const __m512 lo = _mm512_set1_ps(-87.33654f), hi = _mm512_set1_ps(88.72283f);
  const __m512 log2e = _mm512_set1_ps(1.44269504088896341f);
  const __m512 ln2_hi = _mm512_set1_ps(0.693359375f), ln2_lo = _mm512_set1_ps(-2.12194440e-4f);
  const __m512 c0 = _mm512_set1_ps(1.9875691500e-4f), c1 = _mm512_set1_ps(1.3981999507e-3f),
               c2 = _mm512_set1_ps(8.3334519073e-3f), c3 = _mm512_set1_ps(4.1665795894e-2f),
               c4 = _mm512_set1_ps(1.6666665459e-1f), c5 = _mm512_set1_ps(5.0000001201e-1f);
  const __m512 one = _mm512_set1_ps(1.0f);
  const __mmask16 kept = _mm512_cmp_ps_mask(v, lo, _CMP_NLT_UQ);  // not below lo (NaN kept)
  const __m512 a = _mm512_min_ps(_mm512_max_ps(v, lo), hi);
  const __m512 k =
      _mm512_roundscale_ps(_mm512_mul_ps(a, log2e), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(k, ln2_hi, a);
  r = _mm512_fnmadd_ps(k, ln2_lo, r);
  __m512 p = _mm512_fmadd_ps(c0, r, c1);
  p = _mm512_fmadd_ps(p, r, c2);
  p = _mm512_fmadd_ps(p, r, c3);
  p = _mm512_fmadd_ps(p, r, c4);
  p = _mm512_fmadd_ps(p, r, c5);
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, one));
  const __m512i e =
      _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(k), _mm512_set1_epi32(126)), 23);
  const __m512 y = _mm512_mul_ps(_mm512_mul_ps(p, _mm512_castsi512_ps(e)), _mm512_set1_ps(2.0f));
  return _mm512_maskz_mov_ps(kept, y);
}

}  // namespace tls::cpu

#endif
