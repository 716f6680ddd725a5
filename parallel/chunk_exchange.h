// gather_chunks: the compressed chunk vectors of every sequence-parallel slice (docs/DESIGN.md
// section 3), forward beside backward:
//
//   forward   all-gather over sp of each rank's [B, cache_slots + block_slots, dl] slots, in the
//             global slot order
//               [cache slots of rank 0, 1, ..., sp-1 ; block slots of rank 0, 1, ..., sp-1]
//   backward  reduce-scatter over sp: the gradient of every slot, summed over the ranks whose
//             queries saw it, goes back to the slot's owner (the forward's adjoint)
//
// Each rank compresses its own slice of the cache and of the block, and every query may see the
// compressed vectors of any earlier slice, so the small slot tensors travel rather than the
// keys and values they summarise.
//
// gather_chunks_forward_start / gather_chunks_backward_start let the exchange run alongside
// later work (on GPUs: NCCL on the point-to-point stream); ChunkExchange::wait() gives the same
// result as the blocking form. Inputs must not change before then. With sp = 1 both directions
// return their input tensor itself.
#pragma once

#include <memory>

#include "kernels/ops.h"
#include "parallel/comm.h"
#include "parallel/topology.h"

namespace tls {

class ChunkExchange {
 public:
  ChunkExchange() = default;
  // The exchanged tensor, once the transfer is done (ordered before later device work).
  Tensor wait();

 private:
  friend ChunkExchange gather_chunks_forward_start(Ops&, const Topology&, const Tensor&, int64_t);
  friend ChunkExchange gather_chunks_backward_start(Ops&, const Topology&, const Tensor&, int64_t,
                                                    int64_t);
  Ops* ops_ = nullptr;
  std::unique_ptr<Request> request_;
  Tensor result_, buffer_;  // buffer_: the gather's rank-ordered rows, to reorder
  int n_ranks_ = 1;
  int64_t cache_slots_ = 0, block_slots_ = 0;
};

ChunkExchange gather_chunks_forward_start(Ops& ops, const Topology& topo, const Tensor& local,
                                          int64_t cache_slots);
ChunkExchange gather_chunks_backward_start(Ops& ops, const Topology& topo, const Tensor& dglobal,
                                           int64_t cache_slots, int64_t block_slots);

// local: [B, cache_slots + block_slots, dl] (this rank's cache slots, then block slots);
// returns [B, sp * (cache_slots + block_slots), dl] in global order.
Tensor gather_chunks_forward(Ops& ops, const Topology& topo, const Tensor& local,
                             int64_t cache_slots);
// dglobal: [B, sp * (cache_slots + block_slots), dl]; returns this rank's summed gradient
// [B, cache_slots + block_slots, dl].
Tensor gather_chunks_backward(Ops& ops, const Topology& topo, const Tensor& dglobal,
                              int64_t cache_slots, int64_t block_slots);

}  // namespace tls
