// The compressed part of the attention under sequence parallelism, with no rank holding every
// slot (docs/DESIGN.md section 3).
//
// Each sp rank owns the compressed slots of its slices: cache_slots of the cache and block_slots
// of the block, [B, cache_slots + block_slots, dl] after LN_dproj. In global chunk order the
// owner o's cache slots start at chunk o M_l / c and its block slots at chunk M / c + o T_l / c.
// The owners' slot groups travel round the sp ring (rank s sends to s + 1): at step i rank s holds
// the group of owner s - i, attends its queries to the part of it they may see while the next
// group is in flight, and merges the partial results by their log-sum-exp. A rank therefore
// holds two groups at a time instead of all sp of them, so its memory for the slots no longer
// grows with sp.
//
// The backward sends the groups round again, each with its gradient: every rank adds what its
// queries contribute, and after a full turn the gradient arrives back at its owner. With sp = 1
// both directions are one chunk_attention call over the rank's own slots.
//
// The kernels see a group as slots numbered from 0: the query chunks are shifted by the group's
// first chunk (kernels/ops.h, chunk_attention_forward), which leaves every visibility test and
// relative id as it was.
#pragma once

#include <cstdint>

#include "kernels/ops.h"
#include "parallel/topology.h"

namespace tls {

// Where this rank's slots sit in the global chunk order.
struct SlotLayout {
  int64_t cache_slots = 0;  // per rank: M_l / c * r
  int64_t block_slots = 0;  // per rank: T_l / c * r
};

// out, lse (overwritten): this rank's queries over every rank's slots, as chunk_attention_forward
// over the gathered slots would give them. khat_local, vhat_local: [B, cache_slots + block_slots,
// dl]; s: the attention shape of this rank's queries (first_query_chunk global). Message tags
// 2 tag and 2 tag + 1 on the sp communicator.
void chunk_attention_ring_forward(Ops& ops, const Topology& topo, Tensor& out, Tensor& lse,
                                  const Tensor& q, const Tensor& khat_local,
                                  const Tensor& vhat_local, const Tensor& pos,
                                  const AttentionShape& s, const SlotLayout& slots, int tag);

// The backward, given the merged lse and delta: dq and dpos accumulate this rank's queries'
// gradients; dkhat_local and dvhat_local accumulate the gradient of this rank's slots summed over
// every rank's queries. Message tags 2 tag .. 2 tag + 3.
void chunk_attention_ring_backward(Ops& ops, const Topology& topo, Tensor& dq, Tensor& dkhat_local,
                                   Tensor& dvhat_local, Tensor& dpos, const Tensor& dout,
                                   const Tensor& lse, const Tensor& delta, const Tensor& q,
                                   const Tensor& khat_local, const Tensor& vhat_local,
                                   const Tensor& pos, const AttentionShape& s,
                                   const SlotLayout& slots, int tag);

}  // namespace tls
