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
// relative id as it was. A group wholly before the queries is seen whole by every query; there
// the query chunks move down to the group's end as well, so the call's ids start at 0 and the
// positional rows it reads are only those its ids span (ChunkPositions): no rank ever holds the
// whole positional table, whose (M + T) r / c rows would not shrink with sp either.
#pragma once

#include <cstdint>
#include <functional>

#include "kernels/ops.h"
#include "parallel/topology.h"

namespace tls {

// Where this rank's slots sit in the global chunk order.
struct SlotLayout {
  int64_t cache_slots = 0;  // per rank: M_l / c * r
  int64_t block_slots = 0;  // per rank: T_l / c * r
};

// The compressed part's positional rows P[id] for ids 0 .. n_pos - 1 (a query's id past n_pos - 1
// reads row n_pos - 1), made for each kernel call from the ids it spans.
struct ChunkPositions {
  int64_t n_pos = 0;
  // [count, dl]: P[first .. first + count).
  std::function<Tensor(Ops& ops, int64_t first, int64_t count)> rows;
  // Accumulates the gradient of P[first .. first + drows.dim(0)) (the backward's only).
  std::function<void(Ops& ops, int64_t first, const Tensor& drows)> backward;
};
// P as a table [n_pos, dl] held whole; dpos (may be null) accumulates its gradient.
ChunkPositions table_positions(const Tensor& pos, Tensor* dpos);

// One kernel call: the queries of shape s against a part of `part_slots` slots that starts at
// global chunk `first_chunk`. shape: the call's AttentionShape; pos_first, pos_count: the rows of
// P it reads (the kernel's row i is P[pos_first + i]). False when no query sees a slot of it.
struct ChunkCall {
  AttentionShape shape;
  int64_t pos_first = 0, pos_count = 0;
};
bool chunk_call(const AttentionShape& s, int64_t first_chunk, int64_t part_slots, int64_t n_pos,
                ChunkCall& call);

// out, lse (overwritten): this rank's queries over every rank's slots, as chunk_attention_forward
// over the gathered slots and the whole table P would give them. khat_local, vhat_local:
// [B, cache_slots + block_slots, dl]; s: the attention shape of this rank's queries
// (first_query_chunk global). Message tags 2 tag and 2 tag + 1 on the sp communicator.
void chunk_attention_ring_forward(Ops& ops, const Topology& topo, Tensor& out, Tensor& lse,
                                  const Tensor& q, const Tensor& khat_local,
                                  const Tensor& vhat_local, const ChunkPositions& pos,
                                  const AttentionShape& s, const SlotLayout& slots, int tag);

// The backward, given the merged lse and delta: dq and P (pos.backward) accumulate this rank's
// queries' gradients; dkhat_local and dvhat_local accumulate the gradient of this rank's slots
// summed over every rank's queries. Message tags 2 tag .. 2 tag + 3.
void chunk_attention_ring_backward(Ops& ops, const Topology& topo, Tensor& dq, Tensor& dkhat_local,
                                   Tensor& dvhat_local, const Tensor& dout, const Tensor& lse,
                                   const Tensor& delta, const Tensor& q, const Tensor& khat_local,
                                   const Tensor& vhat_local, const ChunkPositions& pos,
                                   const AttentionShape& s, const SlotLayout& slots, int tag);

}  // namespace tls
