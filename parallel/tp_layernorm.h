// LayerNorm over a row whose features are split across the tp ranks (LN_win and LN_dproj of the
// attention normalise over the full d while each rank holds only its heads' columns). The row
// statistics are all-reduced over tp: two numbers per row forward (sum, then the centred sum of
// squares) and two backward (sum g, sum g xhat). With tp = 1 it is the fused LayerNorm.
#pragma once

#include "kernels/ops.h"
#include "parallel/topology.h"

namespace tls {

struct LayerNormStats {
  Tensor mean, rstd;  // [rows]
};

void tp_layernorm_forward(Ops& ops, const Topology& topo, const Tensor& x, const Tensor& gamma,
                          const Tensor& beta, int64_t n_features, double eps, Tensor& out,
                          LayerNormStats& stats);
// dx (may be undefined), dgamma, dbeta accumulate.
void tp_layernorm_backward(Ops& ops, const Topology& topo, const Tensor& dout, const Tensor& x,
                           const Tensor& gamma, const LayerNormStats& stats, int64_t n_features,
                           Tensor& dx, Tensor& dgamma, Tensor& dbeta);

}  // namespace tls
