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

Tensor gather_chunks(Ops& ops, const Topology& topo, const Tensor& local, int64_t cache_slots) {
  const int n = topo.sp->size();
  if (n == 1) return local;
  const int64_t B = local.dim(0), slots = local.dim(1), dl = local.dim(2);
  Tensor buffer = ops.empty({n, B, slots, dl}, local.dtype());
  topo.sp->allgather(buffer, local);
  traffic().chunks += static_cast<int64_t>(local.bytes()) * (n - 1);
  Tensor global = ops.empty({B, n * slots, dl}, local.dtype());
  reorder(ops, buffer, global, n, cache_slots, slots - cache_slots, true);
  return global;
}

Tensor reduce_scatter_chunks(Ops& ops, const Topology& topo, const Tensor& dglobal,
                             int64_t cache_slots, int64_t block_slots) {
  const int n = topo.sp->size();
  if (n == 1) return dglobal;
  const int64_t B = dglobal.dim(0), dl = dglobal.dim(2), local = cache_slots + block_slots;
  Tensor buffer = ops.empty({n, B, local, dl}, dglobal.dtype());
  Tensor global = dglobal;
  reorder(ops, buffer, global, n, cache_slots, block_slots, false);
  Tensor mine = ops.empty({B, local, dl}, dglobal.dtype());
  topo.sp->reduce_scatter_sum(mine, buffer);
  traffic().chunks += static_cast<int64_t>(mine.bytes()) * (n - 1);
  return mine;
}

}  // namespace tls
