// reduce_gradients: after the backward, every parameter gradient is a partial sum over the
// ranks that hold the same parameter shard (dp x sp); one all-reduce of a flat buffer makes it
// the gradient of the whole global batch. gradient_norm counts every shard exactly once:
// tp-sharded gradients are summed over tp, replicated ones are taken once.
#pragma once

#include <vector>

#include "layers/parameter.h"
#include "parallel/topology.h"

namespace tls {

void reduce_gradients(Ops& ops, const Topology& topo, const std::vector<Parameter*>& params);
double global_gradient_norm(Ops& ops, const Topology& topo, const std::vector<Parameter*>& params);

}  // namespace tls
