// gather_chunks / reduce_scatter_chunks: the compressed chunk vectors across sequence-parallel
// ranks (DESIGN.md section 3). Each rank compresses its own slice of the cache and of the block;
// every query may see compressed vectors of any earlier slice, so the small [B, slots, dl]
// tensors are all-gathered, in the global slot order
//   [cache slots of rank 0, 1, ..., sp-1 ; block slots of rank 0, 1, ..., sp-1].
// The backward is the mirror: the gradient of every slot, summed over the ranks whose queries
// saw it, is reduce-scattered back to the slot's owner.
#pragma once

#include "kernels/ops.h"
#include "parallel/topology.h"

namespace tls {

// local: [B, cache_slots + block_slots, dl] (this rank's cache slots, then block slots);
// returns [B, sp * (cache_slots + block_slots), dl] in global order.
Tensor gather_chunks(Ops& ops, const Topology& topo, const Tensor& local, int64_t cache_slots);
// dglobal: [B, sp * (cache_slots + block_slots), dl]; returns this rank's summed gradient
// [B, cache_slots + block_slots, dl].
Tensor reduce_scatter_chunks(Ops& ops, const Topology& topo, const Tensor& dglobal,
                             int64_t cache_slots, int64_t block_slots);

}  // namespace tls
