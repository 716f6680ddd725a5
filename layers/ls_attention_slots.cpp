// The steps LSAttention's pass (ls_attention.cpp) is made of, each forward beside its backward:
// the rows' projections, the block's and the cache's compression into slots, the cache tail's
// projection (slice 0's halo), and a piece's attention up to proj_out.
#include <cmath>
#include <vector>

#include "layers/chunk_attention_ring.h"
#include "layers/ls_attention.h"
#include "parallel/halo_exchange.h"
#include "parallel/mappings.h"

namespace tls {

void LSAttention::project_keys_values(Ops& ops, const Tensor& h, Tensor& keys,
                                      Tensor& values) const {
  copy_to_tp_forward(*topo_, h);
  keys = values = Tensor();
  proj_key.forward(ops, h, keys);
  proj_val.forward(ops, h, values);
}

void LSAttention::project_back(Ops& ops, const Tensor& h_ext, const Tensor& h, const Tensor& dkeys,
                               const Tensor& dvalues, Tensor& dq, Tensor& dh) {
  // Gradients through this rank's heads only are partial over tp: summed once, here.
  Tensor dh_partial = ops.zeros(h_ext.shape(), h_ext.dtype());
  proj_key.backward(ops, dkeys, h_ext, dh_partial);
  proj_val.backward(ops, dvalues, h_ext, dh_partial);
  if (dq.defined()) {
    ops.scale(dq, 1.0 / std::sqrt(static_cast<double>(cfg_.d_head())));
    const int64_t halo_rows = h_ext.dim(1) - h.dim(1);
    if (halo_rows == 0) {
      proj_query.backward(ops, dq, h, dh_partial);
    } else {
      Tensor dh_rows = ops.zeros(h.shape(), h.dtype());
      proj_query.backward(ops, dq, h, dh_rows);
      ops.add_rows(dh_partial, halo_rows, dh_rows, 0, h.dim(1));
    }
  }
  copy_to_tp_backward(*topo_, dh_partial);
  ops.axpy(1.0, dh_partial, dh);
}

void LSAttention::compress_block_rows(Ops& ops, const Tensor& h, const Tensor& keys,
                                      const Tensor& values, int64_t t0, Tensor& block_weights,
                                      Tensor& keys_chunks, Tensor& values_chunks) const {
  const DType dt = h.dtype();
  const int64_t B = h.dim(0), n = h.dim(1), c = cfg_.chunk_size, r = cfg_.chunk_rank;
  Tensor scores;
  dconv_1.forward(ops, h, scores);
  Tensor weights = ops.empty({B, n, cfg_.n_head * r}, dt);
  ops.chunk_softmax_forward(weights, scores, c);
  ops.copy_rows(block_weights, t0, weights, 0, n);
  // Project (the caller did), then compress with this rank's heads' weights.
  Tensor compressed = ops.empty({B, n / c * r, d_local_}, dt);
  ops.compress_chunks_forward(compressed, keys, weights, c, r, n_head_local_, head_offset_);
  ops.copy_rows(keys_chunks, t0 / c * r, compressed, 0, n / c * r);
  ops.compress_chunks_forward(compressed, values, weights, c, r, n_head_local_, head_offset_);
  ops.copy_rows(values_chunks, t0 / c * r, compressed, 0, n / c * r);
}

void LSAttention::compress_block_rows_backward(Ops& ops, const Tensor& h, const Tensor& keys,
                                               const Tensor& values, const Tensor& weights,
                                               const Tensor& dkeys_chunks,
                                               const Tensor& dvalues_chunks, Tensor& dkeys,
                                               Tensor& dvalues, Tensor& dh) {
  const DType dt = h.dtype();
  const int64_t B = h.dim(0), n = h.dim(1), c = cfg_.chunk_size, r = cfg_.chunk_rank;
  const int64_t H = cfg_.n_head;
  // Each tp rank fills only its heads' weight columns; assembling them is exact.
  Tensor dweights = ops.zeros({B, n, H * r}, dt);
  ops.compress_chunks_backward(dkeys, dweights, dkeys_chunks, keys, weights, c, r, n_head_local_,
                               head_offset_);
  ops.compress_chunks_backward(dvalues, dweights, dvalues_chunks, values, weights, c, r,
                               n_head_local_, head_offset_);
  split_columns_to_tp_backward(*topo_, dweights);
  Tensor dscores = ops.zeros({B, n, H * r}, dt);
  ops.chunk_softmax_backward(dscores, dweights, weights, c);
  dconv_1.backward(ops, dscores, h, dh);
}

void LSAttention::compress_cache(Ops& ops, const Tensor& cache, Tensor& weights, Tensor& compressed,
                                 Tensor& keys, Tensor& values) const {
  const int64_t B = cache.dim(0), M = cache.dim(1), c = cfg_.chunk_size, r = cfg_.chunk_rank;
  const int64_t H = cfg_.n_head;
  Tensor scores;
  dconv_1.forward(ops, cache, scores);
  weights = ops.empty({B, M, H * r}, cache.dtype());
  ops.chunk_softmax_forward(weights, scores, c);
  compressed = ops.empty({B, M / c * r, cfg_.d_model}, cache.dtype());
  ops.compress_chunks_forward(compressed, cache, weights, c, r, H, 0);
  keys = values = Tensor();
  proj_key.forward(ops, compressed, keys);
  proj_val.forward(ops, compressed, values);
}

void LSAttention::compress_cache_backward(Ops& ops, const Tensor& dkeys, const Tensor& dvalues,
                                          const Tensor& cache, const Tensor& weights,
                                          const Tensor& compressed, Tensor& dcache) {
  // The merged compressed rows feed every head: their gradient is summed over tp first, so the
  // weights' gradients below are complete and identical on every tp rank. The cache is a
  // constant (truncated BPTT); its gradient only serves norm1's parameters.
  const DType dt = cache.dtype();
  const int64_t B = cache.dim(0), M = cache.dim(1), c = cfg_.chunk_size, r = cfg_.chunk_rank;
  const int64_t H = cfg_.n_head;
  Tensor dcompressed = ops.zeros(compressed.shape(), dt);
  proj_key.backward(ops, dkeys, compressed, dcompressed);
  proj_val.backward(ops, dvalues, compressed, dcompressed);
  copy_to_tp_backward(*topo_, dcompressed);
  Tensor dweights = ops.zeros({B, M, H * r}, dt);
  ops.compress_chunks_backward(dcache, dweights, dcompressed, cache, weights, c, r, H, 0);
  Tensor dscores = ops.zeros({B, M, H * r}, dt);
  ops.chunk_softmax_backward(dscores, dweights, weights, c);
  dconv_1.backward(ops, dscores, cache, dcache);
}

void LSAttention::project_tail(Ops& ops, const Tensor& cache, LSAttentionSlots& slots, Tensor& keys,
                               Tensor& values) const {
  const int64_t M = cache.dim(1), w = cfg_.window_len;
  slots.cache_tail = copy_of_rows(ops, cache, M - w, w);
  project_keys_values(ops, slots.cache_tail, keys, values);
}

void LSAttention::project_tail_backward(Ops& ops, const LSAttentionSlots& slots,
                                        const Tensor& dkeys, const Tensor& dvalues,
                                        Tensor& dcache_partial) {
  const int64_t w = cfg_.window_len;
  Tensor dtail = dcache_partial.defined()
                     ? ops.zeros({slots.cache_tail.dim(0), w, cfg_.d_model}, dkeys.dtype())
                     : Tensor();
  proj_key.backward(ops, dkeys, slots.cache_tail, dtail);
  proj_val.backward(ops, dvalues, slots.cache_tail, dtail);
  if (dcache_partial.defined())
    ops.add_rows(dcache_partial, dcache_partial.dim(1) - w, dtail, 0, w);
}

ChunkPositions LSAttention::chunk_positions(int64_t n_pos, Linear* gradients) const {
  const Linear* net = &r_net_chunk;
  const int64_t d = cfg_.d_model;
  // PE(first .. first + count - 1), full d (r_net_chunk takes this rank's heads' columns).
  auto encodings = [net, d](Ops& ops, int64_t first, int64_t count) {
    std::vector<double> ids(static_cast<size_t>(count));
    for (int64_t i = 0; i < count; ++i)
      ids[static_cast<size_t>(i)] = static_cast<double>(first + i);
    Tensor pe = ops.empty({count, d}, net->weight.value.dtype());
    ops.sinusoid_forward(pe, ids);
    return pe;
  };
  ChunkPositions p;
  p.n_pos = n_pos;
  p.rows = [net, encodings](Ops& ops, int64_t first, int64_t count) {
    Tensor rows;
    net->forward(ops, encodings(ops, first, count), rows);
    return rows;
  };
  if (gradients)
    p.backward = [gradients, encodings](Ops& ops, int64_t first, const Tensor& drows) {
      Tensor none;
      gradients->backward(ops, drows, encodings(ops, first, drows.dim(0)), none);
    };
  return p;
}

void LSAttention::attend(Ops& ops, const Tensor& h_ext, int64_t t0, const LSAttentionSlots& slots,
                         const AttentionShape& s, PieceActivations& a,
                         LSAttentionSlots* in_flight) const {
  const DType dt = h_ext.dtype();
  const int64_t B = h_ext.dim(0), w = s.window, n = s.tokens, halo_rows = h_ext.dim(1) - n;
  const int64_t dl = d_local_;
  a.h = halo_rows == 0 ? h_ext : copy_of_rows(ops, h_ext, halo_rows, n);
  copy_to_tp_forward(*topo_, h_ext);
  a.q = Tensor();
  proj_query.forward(ops, a.h, a.q);
  ops.scale(a.q, 1.0 / std::sqrt(static_cast<double>(cfg_.d_head())));
  if (!a.keys.defined()) project_keys_values(ops, h_ext, a.keys, a.values);

  // Window part: the slice's first piece takes its w rows before from the halo, the others
  // from the rows of h_ext before them.
  if (in_flight) in_flight->halo.wait();
  if (t0 == 0) {
    a.keys_raw = ops.empty({B, w + n, dl}, dt);
    a.values_raw = ops.empty({B, w + n, dl}, dt);
    ops.copy_rows(a.keys_raw, 0, slots.halo_keys, 0, w);
    ops.copy_rows(a.keys_raw, w, a.keys, 0, n);
    ops.copy_rows(a.values_raw, 0, slots.halo_values, 0, w);
    ops.copy_rows(a.values_raw, w, a.values, 0, n);
  } else {
    a.keys_raw = a.keys;
    a.values_raw = a.values;
  }
  dual_ln_win.forward(ops, a.keys_raw, a.keys_win, a.keys_win_ln);
  dual_ln_win.forward(ops, a.values_raw, a.values_win, a.values_win_ln);
  Tensor out_win = ops.empty({B, n, dl}, dt), lse_win = ops.empty({B, s.n_head, n}, dt);
  ops.window_attention_forward(out_win, lse_win, a.q, a.keys_win, a.values_win, slots.rel_window,
                               r_w_bias.value, r_r_bias.value, s);

  // Compressed part: every rank's slots, round the sp ring.
  if (in_flight) in_flight->in_flight = false;
  Tensor out_chunk = ops.empty({B, n, dl}, dt), lse_chunk = ops.empty({B, s.n_head, n}, dt);
  chunk_attention_ring_forward(ops, *topo_, out_chunk, lse_chunk, a.q, slots.khat, slots.vhat,
                               chunk_positions(slots.chunk_ids, nullptr), s, slot_layout(slots),
                               tag_ + 2);
  a.attn = ops.empty({B, n, dl}, dt);
  a.lse = ops.empty({B, s.n_head, n}, dt);
  ops.attention_merge(a.attn, a.lse, out_chunk, lse_chunk, out_win, lse_win, s);
}

void LSAttention::attend_backward(Ops& ops, const Tensor& dout, const PieceActivations& a,
                                  const LSAttentionSlots& slots, int64_t t0,
                                  const AttentionShape& s, LSAttentionSlotGrads& grads, Tensor& dq,
                                  Tensor& dkeys, Tensor& dvalues) {
  const DType dt = dout.dtype();
  const int64_t B = dout.dim(0), n = s.tokens, w = s.window, dl = d_local_;
  Tensor dattn = ops.zeros({B, n, dl}, dt);
  proj_out.backward(ops, dout, a.attn, dattn);
  Tensor delta = ops.empty({B, n_head_local_, n}, dt);
  ops.attention_delta(delta, dattn, a.attn, s);
  dq = ops.zeros({B, n, dl}, dt);
  // This rank's slots' gradient comes home round the ring, summed over every rank's queries.
  chunk_attention_ring_backward(
      ops, *topo_, dq, grads.dkhat, grads.dvhat, dattn, a.lse, delta, a.q, slots.khat, slots.vhat,
      chunk_positions(slots.chunk_ids, &r_net_chunk), s, slot_layout(slots), tag_ + 3);
  Tensor dkeys_win = ops.zeros({B, w + n, dl}, dt), dvalues_win = ops.zeros({B, w + n, dl}, dt);
  ops.window_attention_backward(dq, dkeys_win, dvalues_win, grads.drel_window, r_w_bias.grad,
                                r_r_bias.grad, dattn, a.lse, delta, a.q, a.keys_win, a.values_win,
                                slots.rel_window, r_w_bias.value, r_r_bias.value, s);
  dattn = Tensor();
  Tensor dkeys_raw = ops.zeros({B, w + n, dl}, dt), dvalues_raw = ops.zeros({B, w + n, dl}, dt);
  dual_ln_win.backward(ops, dkeys_win, a.keys_raw, a.keys_win_ln, dkeys_raw);
  dual_ln_win.backward(ops, dvalues_win, a.values_raw, a.values_win_ln, dvalues_raw);

  // The window rows before the slice's first piece came from the halo: their gradient returns
  // to the rank that sent them; every other row of keys is a row of h_ext.
  dkeys = dkeys_raw;
  dvalues = dvalues_raw;
  if (t0 == 0) {
    grads.dhalo_keys = copy_of_rows(ops, dkeys_raw, 0, w);
    grads.dhalo_values = copy_of_rows(ops, dvalues_raw, 0, w);
    grads.dtail_keys = ops.empty({B, w, dl}, dt);
    grads.dtail_values = ops.empty({B, w, dl}, dt);
    grads.halo = halo_exchange_backward_start(ops, *topo_, grads.dhalo_keys, grads.dhalo_values,
                                              grads.dtail_keys, grads.dtail_values, tag_ + 1);
    dkeys = copy_of_rows(ops, dkeys_raw, w, n);
    dvalues = copy_of_rows(ops, dvalues_raw, w, n);
  }
}

}  // namespace tls
