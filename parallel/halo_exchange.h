// halo_exchange: the window's w positions before each sequence-parallel slice (docs/DESIGN.md
// section 3), forward beside backward:
//
//   forward   ring shift over sp: rank s sends its tail to rank s+1 (mod sp) and receives its
//             halo from rank s-1 (mod sp); rank 0's halo is the cache tail held by rank sp-1
//   backward  the reverse shift: the halo's gradient goes back to the rank whose tail it was
//             (the forward's adjoint)
//
// Rank s needs the projected keys and values of the w positions before its slice: rank s-1's
// last block rows, and for rank 0 the last cache rows, which rank sp-1 holds. With sp = 1 the
// halo is this rank's own tail (a ring of one), so one code path serves every layout.
//
// In general (parallel/sequence_layout.h) a rank holds several slices and each has its own halo:
// slice g's halo is the tail of slice g - 1, and slice 0's the cache tail, held by the rank of
// the last slice (whose own block tail nobody needs, so its tail entry carries the cache tail).
// The tails and halos are given per local slice; a transfer within one rank is a copy. Every
// rank posts the transfers in global slice order, so those between one pair of ranks match.
//
// Layers use the _start forms: start, do the work that needs no halo, then HaloExchange::wait().
// The blocking forms are the _start forms waited for at once.
#pragma once

#include <memory>
#include <vector>

#include "kernels/ops.h"
#include "parallel/topology.h"

namespace tls {

// A pending halo transfer (forward or backward); wait() completes it.
class HaloExchange {
 public:
  void wait();

 private:
  friend HaloExchange halo_exchange_start(Ops&, const Topology&, const std::vector<Tensor>&,
                                          const std::vector<Tensor>&, std::vector<Tensor>&,
                                          std::vector<Tensor>&, int, bool);
  std::vector<std::unique_ptr<Request>> requests_;
};

// Per local slice (Topology::layout.sp_order): tails [B, w, dl] (the last slice's entry: the
// cache tail) and halos (allocated by the caller). forward: each slice's halo from its
// predecessor's tail; backward (forward = false): each halo's gradient into its predecessor's
// tail gradient (overwritten). Message tags 2 tag and 2 tag + 1.
HaloExchange halo_exchange_start(Ops& ops, const Topology& topo,
                                 const std::vector<Tensor>& send_keys,
                                 const std::vector<Tensor>& send_values,
                                 std::vector<Tensor>& recv_keys, std::vector<Tensor>& recv_values,
                                 int tag, bool forward);

// Forward: sends tail_keys/tail_values [B, w, dl] to the next rank, receives halo_keys/
// halo_values (allocated by the caller, same shape) from the previous one. With sp = 1 the halo
// is this rank's own tail. Over MPI, exchanges in flight together are told apart by their tags
// (the messages use 2 tag and 2 tag + 1); NCCL has no tags and matches them in posting order
// (parallel/cuda/nccl_comm.h), so every rank starts them in the same order.
HaloExchange halo_exchange_forward_start(Ops& ops, const Topology& topo, const Tensor& tail_keys,
                                         const Tensor& tail_values, Tensor& halo_keys,
                                         Tensor& halo_values, int tag);
// Backward: sends the halo's gradients to the previous rank, receives the gradients of this
// rank's tail from the next one (dtail_* allocated by the caller, and overwritten: every tail
// row feeds exactly one halo row).
HaloExchange halo_exchange_backward_start(Ops& ops, const Topology& topo, const Tensor& dhalo_keys,
                                          const Tensor& dhalo_values, Tensor& dtail_keys,
                                          Tensor& dtail_values, int tag);

// The blocking forms: halo_exchange_*_start(...).wait().
void halo_exchange_forward(Ops& ops, const Topology& topo, const Tensor& tail_keys,
                           const Tensor& tail_values, Tensor& halo_keys, Tensor& halo_values,
                           int tag);
void halo_exchange_backward(Ops& ops, const Topology& topo, const Tensor& dhalo_keys,
                            const Tensor& dhalo_values, Tensor& dtail_keys, Tensor& dtail_values,
                            int tag);

}  // namespace tls
