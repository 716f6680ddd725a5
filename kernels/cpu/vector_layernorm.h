// LayerNorm's float32 row loops (kernels/cpu/layernorm.cpp), compiled for AVX2+FMA lanes (chosen
// once at run time) and for baseline x86-64. Sums run in double as in the float64 path; only
// their order differs (four or eight running lanes instead of one), so the two builds agree to
// rounding. Vectorised because LayerNorm reads every activation row of every layer, forward and
// backward.
#pragma once

#include <cstdint>

namespace tls::cpu {

struct RowMoments {
  double mean, rstd;
};

// out[j] = (x[j] - mean) rstd gamma[j] + beta[j] over one row of n >= 1 values; returns the row's
// mean and rstd = 1 / sqrt(var + eps) (biased variance).
RowMoments layernorm_row_forward(const float* x, const float* gamma, const float* beta, float* out,
                                 int64_t n, double eps);

// dx[j] += rstd (g[j] - mean(g) - xhat[j] mean(g xhat)) with g = dout gamma and
// xhat = (x - mean) rstd, over one row.
void layernorm_row_backward(const float* x, const float* dout, const float* gamma, double mean,
                            double rstd, float* dx, int64_t n);

// Both of the above for one row in one pass over x and dout: dx[j] += ..., and
// dgamma_acc[j] += dout[j] xhat[j], dbeta_acc[j] += dout[j].
void layernorm_row_backward_with_parameter_grads(const float* x, const float* dout,
                                                 const float* gamma, double mean, double rstd,
                                                 float* dx, double* dgamma_acc, double* dbeta_acc,
                                                 int64_t n);

// dgamma_acc[j] += dout[j] xhat[j] and dbeta_acc[j] += dout[j] over one row's columns j < n.
void layernorm_row_parameter_grads(const float* x, const float* dout, double mean, double rstd,
                                   double* dgamma_acc, double* dbeta_acc, int64_t n);

}  // namespace tls::cpu
