// tp_layernorm: LayerNorm over a row whose features are split across the tp ranks
// (docs/DESIGN.md section 3), forward beside backward:
//
//   forward   mean = allreduce_tp(sum_j x) / n, sq = allreduce_tp(sum_j (x - mean)^2),
//             out = (x - mean) rstd gamma + beta with rstd = 1 / sqrt(sq / n + eps)
//   backward  (Sg, Sgx) = allreduce_tp(sum_j g, sum_j g xhat) with g = dout gamma,
//             dx += rstd (g - Sg / n - xhat Sgx / n); dgamma, dbeta from the local columns
//
// LN_win and LN_dproj of the attention normalise over the full d while each rank holds only its
// heads' columns, so only the row statistics travel: two numbers per row forward, two backward.
// Unlike the mappings this operation is nonlinear; its backward is the Jacobian transpose at x.
// With tp = 1 it is the fused single-process LayerNorm.
#pragma once

#include "kernels/ops.h"
#include "parallel/topology.h"

namespace tls {

struct LayerNormStats {
  Tensor mean, rstd;  // [rows]
};

// x: [rows, n_features / tp], this rank's columns of each row; gamma, beta: the same columns.
// out (allocated when undefined) is overwritten; stats receive the full row's mean and rstd,
// [rows], the same on every tp rank.
void tp_layernorm_forward(Ops& ops, const Topology& topo, const Tensor& x, const Tensor& gamma,
                          const Tensor& beta, int64_t n_features, double eps, Tensor& out,
                          LayerNormStats& stats);
// dx (may be undefined), dgamma, dbeta accumulate.
void tp_layernorm_backward(Ops& ops, const Topology& topo, const Tensor& dout, const Tensor& x,
                           const Tensor& gamma, const LayerNormStats& stats, int64_t n_features,
                           Tensor& dx, Tensor& dgamma, Tensor& dbeta);

}  // namespace tls
