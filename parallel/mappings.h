// The tensor-parallel mappings of Megatron, each forward written beside its backward:
//   copy_to_tp:     forward identity            backward all-reduce over tp
//   reduce_from_tp: forward all-reduce over tp  backward identity
// A layer's forward shows its communication: column-parallel projections read the replicated
// input through copy_to_tp; row-parallel projections end in reduce_from_tp.
// gather_columns_from_tp assembles a tensor whose tp ranks each filled disjoint columns (the
// rest zero) by a sum: exact, so every rank ends with bit-identical values.
#pragma once

#include "parallel/topology.h"
#include "parallel/traffic.h"

namespace tls {

// The one tp all-reduce behind the mappings below.
inline void tp_allreduce(const Topology& t, Tensor& x) {
  traffic().tensor += ring_allreduce_bytes(static_cast<int64_t>(x.bytes()), t.tp->size());
  t.tp->allreduce_sum(x);
}

inline void copy_to_tp_forward(const Topology&, const Tensor&) {}
inline void copy_to_tp_backward(const Topology& t, Tensor& grad) { tp_allreduce(t, grad); }

inline void reduce_from_tp_forward(const Topology& t, Tensor& x) { tp_allreduce(t, x); }
inline void reduce_from_tp_backward(const Topology&, Tensor&) {}

inline void gather_columns_from_tp(const Topology& t, Tensor& x) { tp_allreduce(t, x); }

}  // namespace tls
