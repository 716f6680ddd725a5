// The loops are written once (always inlined) and instantiated in a function per target, so the
// AVX2 copy is the same source vectorised four doubles wide. `omp simd reduction` lets the
// compiler reorder the sums (it may not otherwise, without -ffast-math).
#include "kernels/cpu/vector_layernorm.h"

#include <cmath>

namespace tls::cpu {
namespace {

[[gnu::always_inline]] inline RowMoments forward_row(const float* x, const float* gamma,
                                                     const float* beta, float* out, int64_t n,
                                                     double eps) {
  double s = 0.0;
#pragma omp simd reduction(+ : s)
  for (int64_t j = 0; j < n; ++j) s += static_cast<double>(x[j]);
  const double mu = s / static_cast<double>(n);
  double ss = 0.0;
#pragma omp simd reduction(+ : ss)
  for (int64_t j = 0; j < n; ++j) {
    const double d = static_cast<double>(x[j]) - mu;
    ss += d * d;
  }
  const double r = 1.0 / std::sqrt(ss / static_cast<double>(n) + eps);
#pragma omp simd
  for (int64_t j = 0; j < n; ++j)
    out[j] =
        static_cast<float>((static_cast<double>(x[j]) - mu) * r * static_cast<double>(gamma[j]) +
                           static_cast<double>(beta[j]));
  return {mu, r};
}

// dx of one row; with kParameterGrads the first pass also accumulates dgamma (ag) and dbeta (ab).
template <bool kParameterGrads>
[[gnu::always_inline]] inline void backward_row_pass(const float* x, const float* dout,
                                                     const float* gamma, double mu, double r,
                                                     float* dx, double* ag, double* ab, int64_t n) {
  double sg = 0.0, sgx = 0.0;
#pragma omp simd reduction(+ : sg, sgx)
  for (int64_t j = 0; j < n; ++j) {
    const double d = static_cast<double>(dout[j]);
    const double xhat = (static_cast<double>(x[j]) - mu) * r;
    const double g = d * static_cast<double>(gamma[j]);
    sg += g;
    sgx += g * xhat;
    if constexpr (kParameterGrads) {
      ag[j] += d * xhat;
      ab[j] += d;
    }
  }
  sg /= static_cast<double>(n);
  sgx /= static_cast<double>(n);
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) {
    const double g = static_cast<double>(dout[j]) * static_cast<double>(gamma[j]);
    const double xhat = (static_cast<double>(x[j]) - mu) * r;
    dx[j] += static_cast<float>(r * (g - sg - xhat * sgx));
  }
}

[[gnu::always_inline]] inline void backward_row(const float* x, const float* dout,
                                                const float* gamma, double mu, double r, float* dx,
                                                int64_t n) {
  backward_row_pass<false>(x, dout, gamma, mu, r, dx, nullptr, nullptr, n);
}

[[gnu::always_inline]] inline void backward_with_parameter_grads_row(
    const float* x, const float* dout, const float* gamma, double mu, double r, float* dx,
    double* ag, double* ab, int64_t n) {
  backward_row_pass<true>(x, dout, gamma, mu, r, dx, ag, ab, n);
}

[[gnu::always_inline]] inline void parameter_grads_row(const float* x, const float* dout, double mu,
                                                       double r, double* ag, double* ab,
                                                       int64_t n) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) {
    const double g = static_cast<double>(dout[j]);
    ag[j] += g * (static_cast<double>(x[j]) - mu) * r;
    ab[j] += g;
  }
}

#if defined(__x86_64__)
[[gnu::target("avx2,fma")]] RowMoments forward_avx2(const float* x, const float* gamma,
                                                    const float* beta, float* out, int64_t n,
                                                    double eps) {
  return forward_row(x, gamma, beta, out, n, eps);
}
[[gnu::target("avx2,fma")]] void backward_avx2(const float* x, const float* dout,
                                               const float* gamma, double mu, double r, float* dx,
                                               int64_t n) {
  backward_row(x, dout, gamma, mu, r, dx, n);
}
[[gnu::target("avx2,fma")]] void parameter_grads_avx2(const float* x, const float* dout, double mu,
                                                      double r, double* ag, double* ab, int64_t n) {
  parameter_grads_row(x, dout, mu, r, ag, ab, n);
}
[[gnu::target("avx2,fma")]] void backward_with_parameter_grads_avx2(const float* x,
                                                                    const float* dout,
                                                                    const float* gamma, double mu,
                                                                    double r, float* dx, double* ag,
                                                                    double* ab, int64_t n) {
  backward_with_parameter_grads_row(x, dout, gamma, mu, r, dx, ag, ab, n);
}
const bool kAvx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
constexpr bool kAvx2 = false;
#endif

}  // namespace

RowMoments layernorm_row_forward(const float* x, const float* gamma, const float* beta, float* out,
                                 int64_t n, double eps) {
#if defined(__x86_64__)
  if (kAvx2) return forward_avx2(x, gamma, beta, out, n, eps);
#endif
  return forward_row(x, gamma, beta, out, n, eps);
}

void layernorm_row_backward(const float* x, const float* dout, const float* gamma, double mean,
                            double rstd, float* dx, int64_t n) {
#if defined(__x86_64__)
  if (kAvx2) return backward_avx2(x, dout, gamma, mean, rstd, dx, n);
#endif
  backward_row(x, dout, gamma, mean, rstd, dx, n);
}

void layernorm_row_parameter_grads(const float* x, const float* dout, double mean, double rstd,
                                   double* dgamma_acc, double* dbeta_acc, int64_t n) {
#if defined(__x86_64__)
  if (kAvx2) return parameter_grads_avx2(x, dout, mean, rstd, dgamma_acc, dbeta_acc, n);
#endif
  parameter_grads_row(x, dout, mean, rstd, dgamma_acc, dbeta_acc, n);
}

void layernorm_row_backward_with_parameter_grads(const float* x, const float* dout,
                                                 const float* gamma, double mean, double rstd,
                                                 float* dx, double* dgamma_acc, double* dbeta_acc,
                                                 int64_t n) {
#if defined(__x86_64__)
  if (kAvx2)
    return backward_with_parameter_grads_avx2(x, dout, gamma, mean, rstd, dx, dgamma_acc, dbeta_acc,
                                              n);
#endif
  backward_with_parameter_grads_row(x, dout, gamma, mean, rstd, dx, dgamma_acc, dbeta_acc, n);
}

}  // namespace tls::cpu
