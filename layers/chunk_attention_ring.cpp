#include "layers/chunk_attention_ring.h"

#include <limits>
#include <memory>
#include <utility>
#include <vector>

#include "parallel/sequence_layout.h"
#include "parallel/traffic.h"

namespace tls {

int64_t SlotLayout::own_slots() const {
  int64_t n = 0;
  for (const SlotPart& p : owners.at(0)) n += p.slots;
  return n;
}

SlotLayout slot_layout(const Layout& layout, int64_t mem, int64_t tokens, int64_t chunk,
                       int64_t rank) {
  // With sp = 1 the cache is not sliced (it may be longer than the block).
  const SequenceLayout cache = SequenceLayout::of(layout, mem),
                       block = SequenceLayout::of(layout, tokens);
  SlotLayout out;
  for (int o = 0; o < layout.sp; ++o) {
    std::vector<SlotPart> parts;
    int64_t row0 = 0;
    for (const Segment& seg : cache.segments(o)) {
      parts.push_back({row0, seg.n / chunk * rank, seg.t0 / chunk});
      row0 += seg.n / chunk * rank;
    }
    for (const Segment& seg : block.segments(o)) {
      parts.push_back({row0, seg.n / chunk * rank, (mem + seg.t0) / chunk});
      row0 += seg.n / chunk * rank;
    }
    out.owners.push_back(std::move(parts));
  }
  return out;
}

namespace {

// One owner's slots, cut into its parts: the unit that travels.
struct SlotGroup {
  std::vector<Tensor> keys, values;
  int64_t bytes() const {
    int64_t b = 0;
    for (size_t p = 0; p < keys.size(); ++p)
      b += static_cast<int64_t>(keys[p].bytes() + values[p].bytes());
    return b;
  }
};

SlotGroup split_own(Ops& ops, const Tensor& khat, const Tensor& vhat,
                    const std::vector<SlotPart>& parts) {
  SlotGroup g;
  const int64_t B = khat.dim(0), dl = khat.dim(2);
  for (const SlotPart& p : parts) {
    g.keys.push_back(ops.empty({B, p.slots, dl}, khat.dtype()));
    g.values.push_back(ops.empty({B, p.slots, dl}, khat.dtype()));
    ops.copy_rows(g.keys.back(), 0, khat, p.row0, p.slots);
    ops.copy_rows(g.values.back(), 0, vhat, p.row0, p.slots);
  }
  return g;
}

SlotGroup like(Ops& ops, const SlotGroup& g, bool zeroed) {
  SlotGroup out;
  for (size_t p = 0; p < g.keys.size(); ++p) {
    const std::vector<int64_t>& shape = g.keys[p].shape();
    const DType dt = g.keys[p].dtype();
    out.keys.push_back(zeroed ? ops.zeros(shape, dt) : ops.empty(shape, dt));
    out.values.push_back(zeroed ? ops.zeros(shape, dt) : ops.empty(shape, dt));
  }
  return out;
}

// The shape under which the queries attend to one part: the query chunks shifted by the part's
// first global chunk. False when no query sees any of its slots (query chunk g_q sees the
// chunks g < g_q).
bool part_shape(const AttentionShape& s, const SlotPart& part, AttentionShape& shifted) {
  const int64_t last_query_chunk = s.first_query_chunk + s.tokens / s.chunk_size - 1;
  if (part.slots == 0 || part.first_chunk >= last_query_chunk) return false;
  shifted = s;
  shifted.first_query_chunk -= part.first_chunk;
  return true;
}

// Sends `send` to rank `to` and receives `recv` from rank `from`, keys on message tag `tag` and
// values on tag + 1 (each in part order, the same on both sides, which is how MPI and NCCL
// match them). The requests complete the transfers.
void exchange(Comm& comm, const SlotGroup& send, SlotGroup& recv, int to, int from, int tag,
              std::vector<std::unique_ptr<Request>>& requests) {
  for (size_t p = 0; p < recv.keys.size(); ++p) {
    requests.push_back(comm.irecv(recv.keys[p], from, tag));
    requests.push_back(comm.irecv(recv.values[p], from, tag + 1));
  }
  for (size_t p = 0; p < send.keys.size(); ++p) {
    requests.push_back(comm.isend(send.keys[p], to, tag));
    requests.push_back(comm.isend(send.values[p], to, tag + 1));
  }
  comm.start_posted();
  traffic().chunks += send.bytes();
}

void wait_all(std::vector<std::unique_ptr<Request>>& requests) {
  for (auto& r : requests) r->wait();
  requests.clear();
}

// One process whose slots lie in global order ([cache ; block], contiguous): one call each.
bool whole_in_order(const Comm& comm, const SlotLayout& slots, int64_t r) {
  if (comm.size() != 1) return false;
  for (const SlotPart& p : slots.owners[0])
    if (p.first_chunk * r != p.row0) return false;
  return true;
}

}  // namespace

void chunk_attention_ring_forward(Ops& ops, const Topology& topo, std::vector<Tensor>& out,
                                  std::vector<Tensor>& lse, const std::vector<Tensor>& q,
                                  const Tensor& khat_local, const Tensor& vhat_local,
                                  const Tensor& pos, const std::vector<AttentionShape>& s,
                                  const SlotLayout& slots, int tag) {
  Comm& comm = *topo.sp;
  const int n = comm.size(), rank = comm.rank();
  const size_t runs = q.size();
  if (whole_in_order(comm, slots, s[0].chunk_rank)) {
    for (size_t i = 0; i < runs; ++i)
      ops.chunk_attention_forward(out[i], lse[i], q[i], khat_local, vhat_local, pos, s[i]);
    return;
  }
  const int next = (rank + 1) % n, prev = (rank + n - 1) % n;
  SlotGroup current = split_own(ops, khat_local, vhat_local, slots.owners[rank]), arriving;
  std::vector<bool> any(runs, false);
  std::vector<std::unique_ptr<Request>> requests;
  for (int step = 0; step < n; ++step) {
    // The next group travels while this one is attended to.
    if (step + 1 < n) {
      arriving = like(ops, current, false);
      exchange(comm, current, arriving, next, prev, 2 * tag, requests);
    }
    const std::vector<SlotPart>& parts = slots.owners[(rank - step + n) % n];
    for (size_t i = 0; i < runs; ++i) {
      for (size_t p = 0; p < parts.size(); ++p) {
        AttentionShape shifted;
        if (!part_shape(s[i], parts[p], shifted)) continue;
        if (!any[i]) {
          ops.chunk_attention_forward(out[i], lse[i], q[i], current.keys[p], current.values[p], pos,
                                      shifted);
          any[i] = true;
          continue;
        }
        Tensor part_out = ops.empty(out[i].shape(), out[i].dtype()),
               part_lse = ops.empty(lse[i].shape(), lse[i].dtype());
        ops.chunk_attention_forward(part_out, part_lse, q[i], current.keys[p], current.values[p],
                                    pos, shifted);
        Tensor merged_out = ops.empty(out[i].shape(), out[i].dtype());
        Tensor merged_lse = ops.empty(lse[i].shape(), lse[i].dtype());
        ops.attention_merge(merged_out, merged_lse, out[i], lse[i], part_out, part_lse, s[i]);
        ops.copy(out[i], merged_out);
        ops.copy(lse[i], merged_lse);
      }
    }
    wait_all(requests);
    if (step + 1 < n) current = std::move(arriving);
  }
  for (size_t i = 0; i < runs; ++i)
    if (!any[i]) {  // no query sees a slot: the kernels' convention for an empty part
      ops.fill(out[i], 0.0);
      ops.fill(lse[i], -std::numeric_limits<double>::infinity());
    }
}

void chunk_attention_ring_forward(Ops& ops, const Topology& topo, Tensor& out, Tensor& lse,
                                  const Tensor& q, const Tensor& khat_local,
                                  const Tensor& vhat_local, const Tensor& pos,
                                  const AttentionShape& s, const SlotLayout& slots, int tag) {
  std::vector<Tensor> outs{out}, lses{lse};
  chunk_attention_ring_forward(ops, topo, outs, lses, {q}, khat_local, vhat_local, pos, {s}, slots,
                               tag);
}

void chunk_attention_ring_backward(Ops& ops, const Topology& topo, std::vector<Tensor>& dq,
                                   Tensor& dkhat_local, Tensor& dvhat_local, Tensor& dpos,
                                   const std::vector<Tensor>& dout, const std::vector<Tensor>& lse,
                                   const std::vector<Tensor>& delta, const std::vector<Tensor>& q,
                                   const Tensor& khat_local, const Tensor& vhat_local,
                                   const Tensor& pos, const std::vector<AttentionShape>& s,
                                   const SlotLayout& slots, int tag) {
  Comm& comm = *topo.sp;
  const int n = comm.size(), rank = comm.rank();
  const size_t runs = q.size();
  if (whole_in_order(comm, slots, s[0].chunk_rank)) {
    for (size_t i = 0; i < runs; ++i)
      ops.chunk_attention_backward(dq[i], dkhat_local, dvhat_local, dpos, dout[i], lse[i], delta[i],
                                   q[i], khat_local, vhat_local, pos, s[i]);
    return;
  }
  const int next = (rank + 1) % n, prev = (rank + n - 1) % n;
  // The slots travel ahead of the work on them (tags 2 tag, 2 tag + 1); their gradients follow
  // (2 tag + 2, 2 tag + 3) once this rank has added its queries' share, so each gradient makes a
  // full turn and ends at its owner.
  const std::vector<SlotPart>& own = slots.owners[rank];
  SlotGroup current = split_own(ops, khat_local, vhat_local, own), arriving;
  SlotGroup grad_in, grad_out;  // grad_in: the sum over the ranks before this one
  std::vector<std::unique_ptr<Request>> slot_requests, grad_requests;
  for (int step = 0; step < n; ++step) {
    if (step + 1 < n) {
      arriving = like(ops, current, false);
      exchange(comm, current, arriving, next, prev, 2 * tag, slot_requests);
    }
    const std::vector<SlotPart>& parts = slots.owners[(rank - step + n) % n];
    SlotGroup mine = like(ops, current, true);
    for (size_t i = 0; i < runs; ++i)
      for (size_t p = 0; p < parts.size(); ++p) {
        AttentionShape shifted;
        if (!part_shape(s[i], parts[p], shifted)) continue;
        ops.chunk_attention_backward(dq[i], mine.keys[p], mine.values[p], dpos, dout[i], lse[i],
                                     delta[i], q[i], current.keys[p], current.values[p], pos,
                                     shifted);
      }
    if (n == 1) {
      grad_in = std::move(mine);
      break;
    }
    if (step > 0) {
      wait_all(grad_requests);  // grad_in has arrived and grad_out has left
      for (size_t p = 0; p < parts.size(); ++p) {
        ops.axpy(1.0, mine.keys[p], grad_in.keys[p]);
        ops.axpy(1.0, mine.values[p], grad_in.values[p]);
      }
      grad_out = std::move(grad_in);
    } else {
      grad_out = std::move(mine);
    }
    // After the last step what arrives is this rank's own slots' complete gradient.
    grad_in = like(ops, current, false);
    exchange(comm, grad_out, grad_in, next, prev, 2 * tag + 2, grad_requests);
    wait_all(slot_requests);
    if (step + 1 < n) current = std::move(arriving);
  }
  wait_all(grad_requests);
  for (size_t p = 0; p < own.size(); ++p) {
    ops.add_rows(dkhat_local, own[p].row0, grad_in.keys[p], 0, own[p].slots);
    ops.add_rows(dvhat_local, own[p].row0, grad_in.values[p], 0, own[p].slots);
  }
}

void chunk_attention_ring_backward(Ops& ops, const Topology& topo, Tensor& dq, Tensor& dkhat_local,
                                   Tensor& dvhat_local, Tensor& dpos, const Tensor& dout,
                                   const Tensor& lse, const Tensor& delta, const Tensor& q,
                                   const Tensor& khat_local, const Tensor& vhat_local,
                                   const Tensor& pos, const AttentionShape& s,
                                   const SlotLayout& slots, int tag) {
  std::vector<Tensor> dqs{dq};
  chunk_attention_ring_backward(ops, topo, dqs, dkhat_local, dvhat_local, dpos, {dout}, {lse},
                                {delta}, {q}, khat_local, vhat_local, pos, {s}, slots, tag);
}

}  // namespace tls
