#include "parallel/chunk_exchange.h"

#include "parallel/traffic.h"

namespace tls {
namespace {

// Moves rank r's rows between a [sp, B, local, dl] owner-ordered buffer and the global
// [B, sp * local, dl] slot order. to_global: buffer -> global, else global -> buffer.
void reorder(Ops& ops, Tensor& buffer, Tensor& global, int n_ranks, int64_t cache_slots,
             int64_t block_slots, bool to_global) {
  const int64_t B = global.dim(0), dl = global.dim(2), local = cache_slots + block_slots;
  for (int r = 0; r < n_ranks; ++r) {
    Tensor owned = buffer.rows(r, 1).view({B, local, dl});
    const int64_t cache_at = r * cache_slots, block_at = n_ranks * cache_slots + r * block_slots;
    if (to_global) {
      ops.copy_rows(global, cache_at, owned, 0, cache_slots);
      ops.copy_rows(global, block_at, owned, cache_slots, block_slots);
    } else {
      ops.copy_rows(owned, 0, global, cache_at, cache_slots);
      ops.copy_rows(owned, cache_slots, global, block_at, block_slots);
    }
  }
}

}  // namespace

ChunkExchange gather_chunks_forward_start(Ops& ops, const Topology& topo, const Tensor& local,
                                          int64_t cache_slots) {
  ChunkExchange x;
  x.ops_ = &ops;
  x.n_ranks_ = topo.sp->size();
  if (x.n_ranks_ == 1) {
    x.result_ = local;
    return x;
  }
  const int64_t B = local.dim(0), slots = local.dim(1), dl = local.dim(2);
  x.cache_slots_ = cache_slots;
  x.block_slots_ = slots - cache_slots;
  x.buffer_ = ops.empty({x.n_ranks_, B, slots, dl}, local.dtype());
  x.request_ = topo.sp->start_allgather(x.buffer_, local);
  traffic().chunks += static_cast<int64_t>(local.bytes()) * (x.n_ranks_ - 1);
  x.result_ = ops.empty({B, x.n_ranks_ * slots, dl}, local.dtype());
  return x;
}

ChunkExchange gather_chunks_backward_start(Ops& ops, const Topology& topo, const Tensor& dglobal,
                                           int64_t cache_slots, int64_t block_slots) {
  ChunkExchange x;
  x.ops_ = &ops;
  x.n_ranks_ = topo.sp->size();
  if (x.n_ranks_ == 1) {
    x.result_ = dglobal;
    return x;
  }
  const int64_t B = dglobal.dim(0), dl = dglobal.dim(2), local = cache_slots + block_slots;
  Tensor buffer = ops.empty({x.n_ranks_, B, local, dl}, dglobal.dtype());
  Tensor global = dglobal;
  reorder(ops, buffer, global, x.n_ranks_, cache_slots, block_slots, false);
  x.result_ = ops.empty({B, local, dl}, dglobal.dtype());
  x.request_ = topo.sp->start_reduce_scatter_sum(x.result_, buffer);
  traffic().chunks += static_cast<int64_t>(x.result_.bytes()) * (x.n_ranks_ - 1);
  return x;
}

Tensor ChunkExchange::wait() {
  if (request_) {
    request_->wait();
    request_.reset();
    if (buffer_.defined()) {  // a gather: from rank order to the global slot order
      reorder(*ops_, buffer_, result_, n_ranks_, cache_slots_, block_slots_, true);
      buffer_ = Tensor();
    }
  }
  return result_;
}

Tensor gather_chunks_forward(Ops& ops, const Topology& topo, const Tensor& local,
                             int64_t cache_slots) {
  return gather_chunks_forward_start(ops, topo, local, cache_slots).wait();
}

Tensor gather_chunks_backward(Ops& ops, const Topology& topo, const Tensor& dglobal,
                              int64_t cache_slots, int64_t block_slots) {
  return gather_chunks_backward_start(ops, topo, dglobal, cache_slots, block_slots).wait();
}

}  // namespace tls
