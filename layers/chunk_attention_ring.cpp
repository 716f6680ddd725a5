#include "layers/chunk_attention_ring.h"

#include <algorithm>
#include <limits>
#include <memory>
#include <utility>
#include <vector>

#include "kernels/error.h"
#include "parallel/traffic.h"

namespace tls {
namespace {

constexpr int kCache = 0, kBlock = 1;

// One owner's slots, cut into its cache part and its block part: the unit that travels.
struct SlotGroup {
  Tensor keys[2], values[2];
  int64_t bytes() const {
    int64_t b = 0;
    for (int p : {kCache, kBlock}) b += static_cast<int64_t>(keys[p].bytes() + values[p].bytes());
    return b;
  }
};

int64_t part_slots(const SlotLayout& slots, int part) {
  return part == kCache ? slots.cache_slots : slots.block_slots;
}

SlotGroup split_own(Ops& ops, const Tensor& khat, const Tensor& vhat, const SlotLayout& slots) {
  SlotGroup g;
  const int64_t B = khat.dim(0), dl = khat.dim(2);
  for (int p : {kCache, kBlock}) {
    const int64_t n = part_slots(slots, p), row0 = p == kCache ? 0 : slots.cache_slots;
    g.keys[p] = ops.empty({B, n, dl}, khat.dtype());
    g.values[p] = ops.empty({B, n, dl}, khat.dtype());
    ops.copy_rows(g.keys[p], 0, khat, row0, n);
    ops.copy_rows(g.values[p], 0, vhat, row0, n);
  }
  return g;
}

SlotGroup like(Ops& ops, const SlotGroup& g, bool zeroed) {
  SlotGroup out;
  for (int p : {kCache, kBlock}) {
    const std::vector<int64_t>& shape = g.keys[p].shape();
    const DType dt = g.keys[p].dtype();
    out.keys[p] = zeroed ? ops.zeros(shape, dt) : ops.empty(shape, dt);
    out.values[p] = zeroed ? ops.zeros(shape, dt) : ops.empty(shape, dt);
  }
  return out;
}

// The global chunk where owner's part starts.
int64_t part_first_chunk(const AttentionShape& s, const SlotLayout& slots, int sp, int owner,
                         int part) {
  const int64_t r = s.chunk_rank;
  const int64_t cache_chunks = slots.cache_slots / r, block_chunks = slots.block_slots / r;
  return part == kCache ? owner * cache_chunks : sp * cache_chunks + owner * block_chunks;
}

// Sends `send` to rank `to` and receives `recv` from rank `from`, keys on message tag `tag` and
// values on tag + 1 (each in part order, the same on both sides, which is how MPI and NCCL
// match them). The requests complete the transfers.
void exchange(Comm& comm, const SlotGroup& send, SlotGroup& recv, int to, int from, int tag,
              std::vector<std::unique_ptr<Request>>& requests) {
  for (int p : {kCache, kBlock}) {
    requests.push_back(comm.irecv(recv.keys[p], from, tag));
    requests.push_back(comm.irecv(recv.values[p], from, tag + 1));
  }
  for (int p : {kCache, kBlock}) {
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

}  // namespace

ChunkPositions table_positions(const Tensor& pos, Tensor* dpos) {
  ChunkPositions p;
  p.n_pos = pos.dim(0);
  p.rows = [pos](Ops& ops, int64_t first, int64_t count) {
    Tensor rows = ops.empty({count, pos.dim(1)}, pos.dtype());
    Tensor rows3 = rows.view({1, count, pos.dim(1)});
    ops.copy_rows(rows3, 0, pos.view({1, pos.dim(0), pos.dim(1)}), first, count);
    return rows;
  };
  p.backward = [dpos](Ops& ops, int64_t first, const Tensor& drows) {
    if (!dpos) throw Error("chunk positions: no gradient table");
    Tensor d3 = dpos->view({1, dpos->dim(0), dpos->dim(1)});
    ops.add_rows(d3, first, drows.view({1, drows.dim(0), drows.dim(1)}), 0, drows.dim(0));
  };
  return p;
}

bool chunk_call(const AttentionShape& s, int64_t first_chunk, int64_t part_slots, int64_t n_pos,
                ChunkCall& call) {
  const int64_t r = s.chunk_rank;
  // The query chunks q0 .. q1 - 1 and the part's chunks 0 .. p1 - 1 in the part's frame; query
  // chunk g_q sees the chunks g < g_q.
  const int64_t q0 = s.first_query_chunk - first_chunk, q1 = q0 + s.tokens / s.chunk_size;
  const int64_t p1 = part_slots / r;
  if (part_slots == 0 || q1 - 1 <= 0) return false;
  // A part wholly before the queries is seen whole by each of them, and still is with the
  // queries moved down to its end; ids g_q r - 1 - j then start at 0 instead of shift r.
  const int64_t shift = std::max<int64_t>(0, q0 - p1);
  call.shape = s;
  call.shape.first_query_chunk = q0 - shift;
  const int64_t id_max = (q1 - 1) * r - 1;  // the last query chunk against slot 0
  // The kernel reads row min(id - pos_first, pos_count - 1): P[min(id, n_pos - 1)] as long as the
  // rows end at min(id_max, n_pos - 1), or are that one row when every id is clamped to it.
  call.pos_first = std::min(shift * r, n_pos - 1);
  call.pos_count = std::min(id_max, n_pos - 1) - call.pos_first + 1;
  return true;
}

namespace {

// One call of the forward: out, lse (overwritten) for the queries against `keys`, `values`, a part
// starting at global chunk first_chunk. False (nothing written) when no query sees a slot.
bool attend_part(Ops& ops, Tensor& out, Tensor& lse, const Tensor& q, const Tensor& keys,
                 const Tensor& values, const ChunkPositions& pos, const AttentionShape& s,
                 int64_t first_chunk) {
  ChunkCall call;
  if (!chunk_call(s, first_chunk, keys.dim(1), pos.n_pos, call)) return false;
  const Tensor rows = pos.rows(ops, call.pos_first, call.pos_count);
  ops.chunk_attention_forward(out, lse, q, keys, values, rows, call.shape);
  return true;
}

// Its backward: dq, dkeys, dvalues and P's rows accumulate.
void attend_part_backward(Ops& ops, Tensor& dq, Tensor& dkeys, Tensor& dvalues, const Tensor& dout,
                          const Tensor& lse, const Tensor& delta, const Tensor& q,
                          const Tensor& keys, const Tensor& values, const ChunkPositions& pos,
                          const AttentionShape& s, int64_t first_chunk) {
  ChunkCall call;
  if (!chunk_call(s, first_chunk, keys.dim(1), pos.n_pos, call)) return;
  const Tensor rows = pos.rows(ops, call.pos_first, call.pos_count);
  Tensor drows = ops.zeros(rows.shape(), rows.dtype());
  ops.chunk_attention_backward(dq, dkeys, dvalues, drows, dout, lse, delta, q, keys, values, rows,
                               call.shape);
  pos.backward(ops, call.pos_first, drows);
}

}  // namespace

void chunk_attention_ring_forward(Ops& ops, const Topology& topo, Tensor& out, Tensor& lse,
                                  const Tensor& q, const Tensor& khat_local,
                                  const Tensor& vhat_local, const ChunkPositions& pos,
                                  const AttentionShape& s, const SlotLayout& slots, int tag) {
  Comm& comm = *topo.sp;
  const int n = comm.size(), rank = comm.rank();
  bool any = false;
  if (n == 1) {
    any = attend_part(ops, out, lse, q, khat_local, vhat_local, pos, s, 0);
  } else {
    const int next = (rank + 1) % n, prev = (rank + n - 1) % n;
    SlotGroup current = split_own(ops, khat_local, vhat_local, slots), arriving;
    Tensor part_out = ops.empty(out.shape(), out.dtype()),
           part_lse = ops.empty(lse.shape(), lse.dtype());
    Tensor merged_out = ops.empty(out.shape(), out.dtype());
    Tensor merged_lse = ops.empty(lse.shape(), lse.dtype());
    std::vector<std::unique_ptr<Request>> requests;
    for (int step = 0; step < n; ++step) {
      // The next group travels while this one is attended to.
      if (step + 1 < n) {
        arriving = like(ops, current, false);
        exchange(comm, current, arriving, next, prev, 2 * tag, requests);
      }
      const int owner = (rank - step + n) % n;
      for (int p : {kCache, kBlock}) {
        const int64_t first = part_first_chunk(s, slots, n, owner, p);
        if (!any) {
          any = attend_part(ops, out, lse, q, current.keys[p], current.values[p], pos, s, first);
          continue;
        }
        if (!attend_part(ops, part_out, part_lse, q, current.keys[p], current.values[p], pos, s,
                         first))
          continue;
        ops.attention_merge(merged_out, merged_lse, out, lse, part_out, part_lse, s);
        std::swap(out, merged_out);
        std::swap(lse, merged_lse);
      }
      wait_all(requests);
      if (step + 1 < n) current = std::move(arriving);
    }
  }
  if (!any) {  // no query sees a slot: the kernels' convention for an empty part
    ops.fill(out, 0.0);
    ops.fill(lse, -std::numeric_limits<double>::infinity());
  }
}

void chunk_attention_ring_backward(Ops& ops, const Topology& topo, Tensor& dq, Tensor& dkhat_local,
                                   Tensor& dvhat_local, const Tensor& dout, const Tensor& lse,
                                   const Tensor& delta, const Tensor& q, const Tensor& khat_local,
                                   const Tensor& vhat_local, const ChunkPositions& pos,
                                   const AttentionShape& s, const SlotLayout& slots, int tag) {
  Comm& comm = *topo.sp;
  const int n = comm.size(), rank = comm.rank();
  if (n == 1) {
    attend_part_backward(ops, dq, dkhat_local, dvhat_local, dout, lse, delta, q, khat_local,
                         vhat_local, pos, s, 0);
    return;
  }
  const int next = (rank + 1) % n, prev = (rank + n - 1) % n;
  // The slots travel ahead of the work on them (tags 2 tag, 2 tag + 1); their gradients follow
  // (2 tag + 2, 2 tag + 3) once this rank has added its queries' share, so each gradient makes a
  // full turn and ends at its owner.
  SlotGroup current = split_own(ops, khat_local, vhat_local, slots), arriving;
  SlotGroup grad_in, grad_out;  // grad_in: the sum over the ranks before this one
  std::vector<std::unique_ptr<Request>> slot_requests, grad_requests;
  for (int step = 0; step < n; ++step) {
    if (step + 1 < n) {
      arriving = like(ops, current, false);
      exchange(comm, current, arriving, next, prev, 2 * tag, slot_requests);
    }
    const int owner = (rank - step + n) % n;
    SlotGroup mine = like(ops, current, true);
    for (int p : {kCache, kBlock})
      attend_part_backward(ops, dq, mine.keys[p], mine.values[p], dout, lse, delta, q,
                           current.keys[p], current.values[p], pos, s,
                           part_first_chunk(s, slots, n, owner, p));
    if (step > 0) {
      wait_all(grad_requests);  // grad_in has arrived and grad_out has left
      for (int p : {kCache, kBlock}) {
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
  ops.add_rows(dkhat_local, 0, grad_in.keys[kCache], 0, slots.cache_slots);
  ops.add_rows(dkhat_local, slots.cache_slots, grad_in.keys[kBlock], 0, slots.block_slots);
  ops.add_rows(dvhat_local, 0, grad_in.values[kCache], 0, slots.cache_slots);
  ops.add_rows(dvhat_local, slots.cache_slots, grad_in.values[kBlock], 0, slots.block_slots);
}

}  // namespace tls
