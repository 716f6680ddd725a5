// The compressed part of the attention under sequence parallelism, with no rank holding every
// slot (docs/DESIGN.md section 3).
//
// Each sp rank owns the compressed slots of its slices, [B, own slots, dl] after LN_dproj: one
// part per cache segment, then one per block segment (parallel/sequence_layout.h), each a
// contiguous run of the global chunk order (contiguous layout: owner o's cache slots start at
// chunk o M_l / c and its block slots at M / c + o T_l / c; zigzag: four parts).
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
#include <vector>

#include "kernels/ops.h"
#include "parallel/topology.h"

namespace tls {

// A run of an owner's slots that is contiguous in the global chunk order: local slot rows
// [row0, row0 + slots), global chunks from first_chunk on.
struct SlotPart {
  int64_t row0 = 0, slots = 0, first_chunk = 0;
};

// Where every sp rank's slots sit in the global chunk order: per owner, its parts in local row
// order (its cache segments, then its block segments; parallel/sequence_layout.h). Every
// owner's parts have the same sizes, so a group has one shape wherever it travels.
struct SlotLayout {
  std::vector<std::vector<SlotPart>> owners;
  int64_t own_slots() const;
};
// The slots of a layout: caches of `mem` positions and blocks of `tokens` (global), chunks of c
// positions, r slots each.
SlotLayout slot_layout(const Layout& layout, int64_t mem, int64_t tokens, int64_t chunk,
                       int64_t rank);

// out, lse (overwritten): this rank's queries over every rank's slots, as chunk_attention_forward
// over the gathered slots would give them. khat_local, vhat_local: [B, own slots, dl]; s: the
// attention shape of the queries (first_query_chunk global). The queries come as one or more
// contiguous runs (q[i] with shape s[i]), all attended in one turn of the ring. Message tags
// 2 tag and 2 tag + 1 on the sp communicator.
void chunk_attention_ring_forward(Ops& ops, const Topology& topo, std::vector<Tensor>& out,
                                  std::vector<Tensor>& lse, const std::vector<Tensor>& q,
                                  const Tensor& khat_local, const Tensor& vhat_local,
                                  const Tensor& pos, const std::vector<AttentionShape>& s,
                                  const SlotLayout& slots, int tag);
void chunk_attention_ring_forward(Ops& ops, const Topology& topo, Tensor& out, Tensor& lse,
                                  const Tensor& q, const Tensor& khat_local,
                                  const Tensor& vhat_local, const Tensor& pos,
                                  const AttentionShape& s, const SlotLayout& slots, int tag);

// The backward, given the merged lse and delta: dq and dpos accumulate this rank's queries'
// gradients; dkhat_local and dvhat_local accumulate the gradient of this rank's slots summed over
// every rank's queries. Message tags 2 tag .. 2 tag + 3. Per query run as the forward.
void chunk_attention_ring_backward(Ops& ops, const Topology& topo, std::vector<Tensor>& dq,
                                   Tensor& dkhat_local, Tensor& dvhat_local, Tensor& dpos,
                                   const std::vector<Tensor>& dout, const std::vector<Tensor>& lse,
                                   const std::vector<Tensor>& delta, const std::vector<Tensor>& q,
                                   const Tensor& khat_local, const Tensor& vhat_local,
                                   const Tensor& pos, const std::vector<AttentionShape>& s,
                                   const SlotLayout& slots, int tag);
void chunk_attention_ring_backward(Ops& ops, const Topology& topo, Tensor& dq, Tensor& dkhat_local,
                                   Tensor& dvhat_local, Tensor& dpos, const Tensor& dout,
                                   const Tensor& lse, const Tensor& delta, const Tensor& q,
                                   const Tensor& khat_local, const Tensor& vhat_local,
                                   const Tensor& pos, const AttentionShape& s,
                                   const SlotLayout& slots, int tag);

}  // namespace tls
