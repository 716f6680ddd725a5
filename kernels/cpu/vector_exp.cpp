// exp_shifted: expf on AVX2 lanes (kernels/cpu/exp_lanes_avx2.h) where the CPU has them, libm
// elsewhere.
#include "kernels/cpu/vector_exp.h"

#include <cmath>

#include "kernels/cpu/exp_lanes_avx2.h"

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

#ifdef TLS_HAVE_X86
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

const bool kAvx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
const bool kAvx2 = false;
#endif

}  // namespace

double exp_shifted(float* x, int64_t n, float shift) {
#ifdef TLS_HAVE_X86
  if (kAvx2) return exp_shifted_avx2(x, n, shift);
#endif
  return exp_shifted_libm(x, n, shift);
}

double exp_shifted(double* x, int64_t n, double shift) { return exp_shifted_libm(x, n, shift); }

bool exp_shifted_is_vectorised() { return kAvx2; }

}  // namespace tls::cpu
