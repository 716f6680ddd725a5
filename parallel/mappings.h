// The tensor-parallel mappings of Megatron (docs/DESIGN.md section 3), each forward beside its
// backward, the backward being the forward's adjoint:
//
//   operation            forward                               backward
//   copy_to_tp           identity                              all-reduce over tp
//   reduce_from_tp       all-reduce over tp                    identity
//   split_columns_to_tp  each rank reads its own columns of a  all-reduce of the ranks' disjoint
//                        replicated tensor (the kernels index  columns (the rest zero): exact, so
//                        them: no communication)               every rank ends bit-identical
//
// A layer's forward shows its communication: column-parallel projections read the replicated
// input through copy_to_tp; row-parallel projections end in reduce_from_tp. Both directions work
// in place on the caller's tensor; an identity direction is a call that does nothing, written
// out so that a layer's forward and backward name the same mapping.
#pragma once

#include "parallel/topology.h"
#include "parallel/traffic.h"

namespace tls {

namespace detail {
// The one tp all-reduce behind the mappings and the split LayerNorm (parallel/tp_layernorm.cpp),
// counted in traffic().tensor.
inline void tp_allreduce(const Topology& t, Tensor& x) {
  traffic().tensor += ring_allreduce_bytes(static_cast<int64_t>(x.bytes()), t.tp->size());
  t.tp->allreduce_sum(x);
}
}  // namespace detail

inline void copy_to_tp_forward(const Topology&, const Tensor&) {}
inline void copy_to_tp_backward(const Topology& t, Tensor& grad) { detail::tp_allreduce(t, grad); }

inline void reduce_from_tp_forward(const Topology& t, Tensor& x) { detail::tp_allreduce(t, x); }
inline void reduce_from_tp_backward(const Topology&, Tensor&) {}

inline void split_columns_to_tp_forward(const Topology&, const Tensor&) {}
inline void split_columns_to_tp_backward(const Topology& t, Tensor& grad) {
  detail::tp_allreduce(t, grad);
}

}  // namespace tls
