#include "training/gradient_reduction.h"

#include <cmath>

#include "parallel/traffic.h"

namespace tls {

void reduce_gradients(Ops& ops, const Topology& topo, const std::vector<Parameter*>& params) {
  if (topo.dp_sp->size() == 1 || params.empty()) return;
  // One flat buffer per call: a few large messages instead of one per tensor.
  int64_t total = 0;
  for (const Parameter* p : params) total += p->grad.numel();
  const DType dtype = params.front()->grad.dtype();
  Tensor flat = ops.empty({total}, dtype);
  int64_t at = 0;
  for (const Parameter* p : params) {
    Tensor slot = flat.rows(at, p->grad.numel());
    ops.copy(slot, p->grad);
    at += p->grad.numel();
  }
  traffic().gradients +=
      ring_allreduce_bytes(static_cast<int64_t>(flat.bytes()), topo.dp_sp->size());
  topo.dp_sp->allreduce_sum(flat);
  at = 0;
  for (Parameter* p : params) {
    ops.copy(p->grad, flat.rows(at, p->grad.numel()));
    at += p->grad.numel();
  }
}

double global_gradient_norm(Ops& ops, const Topology& topo, const std::vector<Parameter*>& params) {
  double sharded = 0, replicated = 0;
  for (const Parameter* p : params)
    (p->tp_sharded() ? sharded : replicated) += ops.sum_squares(p->grad);
  sharded = topo.tp->allreduce_sum(sharded);
  return std::sqrt(sharded + replicated);
}

}  // namespace tls
