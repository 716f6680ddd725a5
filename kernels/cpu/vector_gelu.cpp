#include "kernels/cpu/vector_gelu.h"

#include <algorithm>
#include <stdexcept>

#include "kernels/cpu/exp_lanes_avx2.h"

namespace tls::cpu {
namespace {

constexpr float kInvSqrt2 = 0.70710678118654752440f;
constexpr float kInvSqrt2Pi = 0.39894228040143267794f;

#ifdef TLS_HAVE_X86
// For eight x: 1 + erf(x / sqrt 2), and exp(-x^2 / 2) (the derivative's Gaussian).
struct GeluLanes {
  __m256 one_plus_erf, gauss;
};

__attribute__((target("avx2,fma"))) inline GeluLanes gelu_lanes(__m256 x) {
  const __m256 sign_mask = _mm256_set1_ps(-0.0f);
  const __m256 u = _mm256_mul_ps(x, _mm256_set1_ps(kInvSqrt2));
  // Past z = 10, erfc(z) and exp(-z^2) are 0 in float; the clamp keeps z^2 finite (and inf out).
  const __m256 z = _mm256_min_ps(_mm256_andnot_ps(sign_mask, u), _mm256_set1_ps(10.0f));
  const __m256 t = _mm256_div_ps(_mm256_set1_ps(1.0f),
                                 _mm256_fmadd_ps(_mm256_set1_ps(0.5f), z, _mm256_set1_ps(1.0f)));
  // exp(-z^2) with z^2 = hi + lo split exactly by an FMA: exp(-hi) (1 - lo).
  const __m256 hi = _mm256_mul_ps(z, z);
  const __m256 lo = _mm256_fmsub_ps(z, z, hi);
  const __m256 gauss =
      _mm256_mul_ps(exp_lanes_avx2(_mm256_sub_ps(_mm256_setzero_ps(), hi)),
                    _mm256_fnmadd_ps(lo, _mm256_set1_ps(1.0f), _mm256_set1_ps(1.0f)));
  __m256 p = _mm256_set1_ps(0.17087277f);
  for (float c : {-0.82215223f, 1.48851587f, -1.13520398f, 0.27886807f, -0.18628806f, 0.09678418f,
                  0.37409196f, 1.00002368f, -1.26551223f})
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(c));
  const __m256 erfc_z = _mm256_mul_ps(_mm256_mul_ps(t, gauss), exp_lanes_avx2(p));
  const __m256 negative = _mm256_cmp_ps(u, _mm256_setzero_ps(), _CMP_LT_OQ);
  const __m256 one_plus_erf =
      _mm256_blendv_ps(_mm256_sub_ps(_mm256_set1_ps(2.0f), erfc_z), erfc_z, negative);
  return {one_plus_erf, gauss};
}

// NaN in, NaN out (the polynomial would turn it into a number).
__attribute__((target("avx2,fma"))) inline __m256 keep_nan(__m256 x, __m256 y) {
  return _mm256_blendv_ps(y, x, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
}

__attribute__((target("avx2,fma"))) inline __m256 gelu_value_lanes(__m256 v) {
  // x below -20 has 1 + erf = 0: the clamp makes -inf give -0 rather than -inf * 0.
  const __m256 vc = _mm256_max_ps(v, _mm256_set1_ps(-20.0f));
  const __m256 r =
      _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), vc), gelu_lanes(v).one_plus_erf);
  return keep_nan(v, r);
}

__attribute__((target("avx2,fma"))) inline __m256 gelu_derivative_lanes(__m256 v) {
  const GeluLanes g = gelu_lanes(v);
  // The Gaussian term x exp(-x^2 / 2) / sqrt(2 pi), with x clamped where the Gaussian is 0 (so
  // +-inf gives 0, not inf * 0).
  const __m256 vc = _mm256_min_ps(_mm256_max_ps(v, _mm256_set1_ps(-20.0f)), _mm256_set1_ps(20.0f));
  const __m256 d = _mm256_fmadd_ps(_mm256_mul_ps(vc, g.gauss), _mm256_set1_ps(kInvSqrt2Pi),
                                   _mm256_mul_ps(_mm256_set1_ps(0.5f), g.one_plus_erf));
  return keep_nan(v, d);
}

__attribute__((target("avx2,fma"))) void gelu_forward_avx2(const float* x, float* y, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, gelu_value_lanes(_mm256_loadu_ps(x + i)));
  if (i < n) {  // the tail through an 8-wide buffer, so every element takes the same path
    alignas(32) float buf[8] = {};
    std::copy(x + i, x + n, buf);
    _mm256_store_ps(buf, gelu_value_lanes(_mm256_load_ps(buf)));
    std::copy(buf, buf + (n - i), y + i);
  }
}

__attribute__((target("avx2,fma"))) void gelu_backward_avx2(const float* x, const float* dout,
                                                            float* dx, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 d = gelu_derivative_lanes(_mm256_loadu_ps(x + i));
    _mm256_storeu_ps(dx + i,
                     _mm256_fmadd_ps(_mm256_loadu_ps(dout + i), d, _mm256_loadu_ps(dx + i)));
  }
  if (i < n) {
    alignas(32) float buf[8] = {};
    std::copy(x + i, x + n, buf);
    _mm256_store_ps(buf, gelu_derivative_lanes(_mm256_load_ps(buf)));
    for (int64_t j = i; j < n; ++j) dx[j] += dout[j] * buf[j - i];
  }
}

const bool kAvx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
const bool kAvx2 = false;
#endif

}  // namespace

void gelu_forward_rows(const float* x, float* y, int64_t n) {
  if (!kAvx2) throw std::logic_error("gelu_forward_rows: this CPU has no AVX2 + FMA");
#ifdef TLS_HAVE_X86
  gelu_forward_avx2(x, y, n);
#endif
}

void gelu_backward_rows(const float* x, const float* dout, float* dx, int64_t n) {
  if (!kAvx2) throw std::logic_error("gelu_backward_rows: this CPU has no AVX2 + FMA");
#ifdef TLS_HAVE_X86
  gelu_backward_avx2(x, dout, dx, n);
#endif
}

bool gelu_is_vectorised() { return kAvx2; }

}  // namespace tls::cpu
