#include "parallel/tp_layernorm.h"

#include "parallel/mappings.h"

namespace tls {

void tp_layernorm_forward(Ops& ops, const Topology& topo, const Tensor& x, const Tensor& gamma,
                          const Tensor& beta, int64_t n_features, double eps, Tensor& out,
                          LayerNormStats& stats) {
  const int64_t rows = x.matrix_rows();
  stats.mean = ops.zeros({rows}, x.dtype());
  stats.rstd = ops.empty({rows}, x.dtype());
  if (!out.defined()) out = ops.empty(x.shape(), x.dtype());
  if (topo.tp->size() == 1) {
    ops.layernorm_forward(out, stats.mean, stats.rstd, x, gamma, beta, eps);
    return;
  }
  Tensor none;
  ops.row_sum(stats.mean, x, none, false);
  detail::tp_allreduce(topo, stats.mean);
  ops.scale(stats.mean, 1.0 / static_cast<double>(n_features));
  Tensor sq = ops.zeros({rows}, x.dtype());
  ops.row_sum(sq, x, stats.mean, true);
  detail::tp_allreduce(topo, sq);
  ops.layernorm_normalize(out, stats.rstd, x, stats.mean, sq, gamma, beta, n_features, eps);
}

void tp_layernorm_backward(Ops& ops, const Topology& topo, const Tensor& dout, const Tensor& x,
                           const Tensor& gamma, const LayerNormStats& stats, int64_t n_features,
                           Tensor& dx, Tensor& dgamma, Tensor& dbeta) {
  if (topo.tp->size() == 1) {
    ops.layernorm_backward(dx, dgamma, dbeta, dout, x, gamma, stats.mean, stats.rstd);
    return;
  }
  Tensor sums = ops.zeros({x.matrix_rows(), 2}, x.dtype());
  ops.layernorm_backward_sums(sums, dout, x, gamma, stats.mean, stats.rstd);
  detail::tp_allreduce(topo, sums);
  ops.layernorm_backward_apply(dx, dgamma, dbeta, dout, x, gamma, stats.mean, stats.rstd, sums,
                               n_features);
}

}  // namespace tls
