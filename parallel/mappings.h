// The tensor-parallel mappings of Megatron, each forward written beside its backward:
//   copy_to_tp:     forward identity            backward all-reduce over tp
//   reduce_from_tp: forward all-reduce over tp  backward identity
// A layer's forward shows its communication: column-parallel projections read the replicated
// input through copy_to_tp; row-parallel projections end in reduce_from_tp.
//   split_columns_to_tp: forward each rank reads its own columns of a replicated tensor (no
//                        communication: the kernels index them)
//                        backward the ranks' disjoint columns (the rest zero) are assembled by
//                        an all-reduce: exact, so every rank ends with bit-identical values.
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

inline void split_columns_to_tp_forward(const Topology&, const Tensor&) {}
inline void split_columns_to_tp_backward(const Topology& t, Tensor& grad) { tp_allreduce(t, grad); }

}  // namespace tls
