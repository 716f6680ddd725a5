// LSAttention in sequence pieces: the computation of ls_attention.cpp cut along the block, so that
// activation checkpointing never holds more than one piece's activations. Three things cross
// pieces, and each is kept whole for the block because it is small:
//   - the compressed slots (every chunk of the block and cache, O(T/c) rows), computed once in
//     forward_slots; their gradient accumulates over the pieces and goes back in backward_slots;
//   - the window's halo: a piece's first query looks w rows back, into the previous piece, whose
//     rows it recomputes from the layer's input (the slice's first piece uses the halo exchange);
//   - the parameters' gradients, which every piece accumulates.
#include <cmath>

#include "layers/ls_attention.h"
#include "parallel/chunk_exchange.h"
#include "parallel/halo_exchange.h"
#include "parallel/mappings.h"
#include "kernels/error.h"

namespace tls {
namespace {

Tensor copy_of_rows(Ops& ops, const Tensor& x, int64_t row0, int64_t n) {
  Tensor out = ops.empty({x.dim(0), n, x.dim(2)}, x.dtype());
  ops.copy_rows(out, 0, x, row0, n);
  return out;
}

}  // namespace

void LSAttention::forward_slots(Ops& ops, const RowsOf& rows, int64_t T, int64_t piece,
                                const Tensor& cache, const PositionTables& pos,
                                LSAttentionSlots& slots) const {
  const DType dt = cache.dtype();
  const int64_t B = cache.dim(0), M = cache.dim(1), dl = d_local_;
  const int64_t w = cfg_.window_len, c = cfg_.chunk_size, r = cfg_.chunk_rank, H = cfg_.n_head;
  const int64_t cache_slots = M / c * r, block_slots = T / c * r;
  slots = LSAttentionSlots();

  // Block chunks, piece by piece: project, compress with this rank's heads' weights. The
  // slice's last w rows of keys and values are its tail, the next slice's halo.
  Tensor keys_chunks = ops.empty({B, block_slots, dl}, dt);
  Tensor values_chunks = ops.empty({B, block_slots, dl}, dt);
  slots.block_weights = ops.empty({B, T, H * r}, dt);
  Tensor tail_keys = ops.empty({B, w, dl}, dt), tail_values = ops.empty({B, w, dl}, dt);
  for (int64_t t0 = 0; t0 < T; t0 += piece) {
    const int64_t n = std::min(piece, T - t0);
    const Tensor h = rows(t0, n);
    Tensor keys, values, scores;
    proj_key.forward(ops, h, keys);
    proj_val.forward(ops, h, values);
    dconv_1.forward(ops, h, scores);
    Tensor weights = ops.empty({B, n, H * r}, dt);
    ops.chunk_softmax_forward(weights, scores, c);
    ops.copy_rows(slots.block_weights, t0, weights, 0, n);
    Tensor compressed = ops.empty({B, n / c * r, dl}, dt);
    ops.compress_chunks_forward(compressed, keys, weights, c, r, n_head_local_, head_offset_);
    ops.copy_rows(keys_chunks, t0 / c * r, compressed, 0, n / c * r);
    ops.compress_chunks_forward(compressed, values, weights, c, r, n_head_local_, head_offset_);
    ops.copy_rows(values_chunks, t0 / c * r, compressed, 0, n / c * r);
    const int64_t tail0 = std::max(t0, T - w);  // rows [tail0, t0 + n) are tail rows
    if (!holds_cache_tail() && tail0 < t0 + n) {
      ops.copy_rows(tail_keys, tail0 - (T - w), keys, tail0 - t0, t0 + n - tail0);
      ops.copy_rows(tail_values, tail0 - (T - w), values, tail0 - t0, t0 + n - tail0);
    }
  }
  if (holds_cache_tail()) {
    slots.cache_tail = copy_of_rows(ops, cache, M - w, w);
    tail_keys = Tensor();
    tail_values = Tensor();
    proj_key.forward(ops, slots.cache_tail, tail_keys);
    proj_val.forward(ops, slots.cache_tail, tail_values);
  }
  slots.halo_keys = ops.empty({B, w, dl}, dt);
  slots.halo_values = ops.empty({B, w, dl}, dt);
  HaloExchange halo = halo_exchange_forward_start(ops, *topo_, tail_keys, tail_values,
                                                  slots.halo_keys, slots.halo_values, tag_);

  Tensor keys_cache, values_cache;
  compress_cache(ops, cache, slots.cache_weights, slots.cache_compressed, keys_cache, values_cache);

  slots.khat_raw = slots_of(ops, keys_cache, keys_chunks);
  slots.vhat_raw = slots_of(ops, values_cache, values_chunks);
  Tensor khat_local, vhat_local;
  dual_ln_dproj.forward(ops, slots.khat_raw, khat_local, slots.khat_ln);
  dual_ln_dproj.forward(ops, slots.vhat_raw, vhat_local, slots.vhat_ln);
  slots.khat = gather_chunks_forward(ops, *topo_, khat_local, cache_slots);
  slots.vhat = gather_chunks_forward(ops, *topo_, vhat_local, cache_slots);
  r_net_chunk.forward(ops, pos.chunk, slots.rel_chunk);
  r_net.forward(ops, pos.window, slots.rel_window);
  halo.wait();
}

namespace {

// One piece's forward, kept for its backward.
struct PieceActivations {
  Tensor h;                     // the piece's own rows of h_ext (a copy when h_ext has a halo)
  Tensor q;                     // [B, n, dl], scaled
  Tensor keys_raw, values_raw;  // [B, w + n, dl] (halo ; piece) before LN_win
  Tensor keys_win, values_win;
  LayerNormSaved keys_win_ln, values_win_ln;
  Tensor attn, lse;
};

}  // namespace

// The piece's attention up to the merged output (before proj_out), shared by forward_piece and
// backward_piece.
static PieceActivations attend_piece(Ops& ops, const LSAttention& self, const Tensor& h_ext,
                                     int64_t t0, const LSAttentionSlots& slots,
                                     const AttentionShape& s, int64_t d_head,
                                     const Topology& topo) {
  const DType dt = h_ext.dtype();
  const int64_t B = h_ext.dim(0), w = s.window, n = s.tokens, halo_rows = h_ext.dim(1) - n;
  const int64_t dl = s.n_head * s.d_head;
  PieceActivations a;
  a.h = halo_rows == 0 ? h_ext : copy_of_rows(ops, h_ext, halo_rows, n);
  copy_to_tp_forward(topo, h_ext);
  self.proj_query.forward(ops, a.h, a.q);
  ops.scale(a.q, 1.0 / std::sqrt(static_cast<double>(d_head)));
  // Keys and values of every row of h_ext; the slice's first piece takes its w rows before from
  // the halo.
  Tensor keys, values;
  self.proj_key.forward(ops, h_ext, keys);
  self.proj_val.forward(ops, h_ext, values);
  if (t0 == 0) {
    a.keys_raw = ops.empty({B, w + n, dl}, dt);
    a.values_raw = ops.empty({B, w + n, dl}, dt);
    ops.copy_rows(a.keys_raw, 0, slots.halo_keys, 0, w);
    ops.copy_rows(a.keys_raw, w, keys, 0, n);
    ops.copy_rows(a.values_raw, 0, slots.halo_values, 0, w);
    ops.copy_rows(a.values_raw, w, values, 0, n);
  } else {
    a.keys_raw = keys;
    a.values_raw = values;
  }
  self.dual_ln_win.forward(ops, a.keys_raw, a.keys_win, a.keys_win_ln);
  self.dual_ln_win.forward(ops, a.values_raw, a.values_win, a.values_win_ln);

  Tensor out_chunk = ops.empty({B, n, dl}, dt), lse_chunk = ops.empty({B, s.n_head, n}, dt);
  ops.chunk_attention_forward(out_chunk, lse_chunk, a.q, slots.khat, slots.vhat, slots.rel_chunk,
                              s);
  Tensor out_win = ops.empty({B, n, dl}, dt), lse_win = ops.empty({B, s.n_head, n}, dt);
  ops.window_attention_forward(out_win, lse_win, a.q, a.keys_win, a.values_win, slots.rel_window,
                               self.r_w_bias.value, self.r_r_bias.value, s);
  a.attn = ops.empty({B, n, dl}, dt);
  a.lse = ops.empty({B, s.n_head, n}, dt);
  ops.attention_merge(a.attn, a.lse, out_chunk, lse_chunk, out_win, lse_win, s);
  return a;
}

AttentionShape LSAttention::piece_shape(const Tensor& h_ext, int64_t t0, int64_t tokens,
                                        int64_t mem) const {
  const int64_t first = first_row(t0), n = h_ext.dim(1) - (t0 - first);
  if (t0 % cfg_.chunk_size != 0 || n <= 0 || n % cfg_.chunk_size != 0 || t0 + n > tokens ||
      (t0 > 0 && t0 < cfg_.window_len))
    throw Error("attention piece at row " + std::to_string(t0) + " with " + std::to_string(n) +
                " rows does not fit a block of " + std::to_string(tokens) +
                " (pieces are chunk-aligned and start at 0 or at least a window in)");
  AttentionShape s = shape(h_ext.dim(0), tokens, mem);
  s.tokens = n;
  s.first_query_chunk += t0 / cfg_.chunk_size;
  return s;
}

void LSAttention::forward_piece(Ops& ops, const Tensor& h_ext, int64_t t0, int64_t tokens,
                                int64_t mem, const LSAttentionSlots& slots, Tensor& out) const {
  const AttentionShape s = piece_shape(h_ext, t0, tokens, mem);
  const PieceActivations a = attend_piece(ops, *this, h_ext, t0, slots, s, cfg_.d_head(), *topo_);
  out = Tensor();
  proj_out.forward(ops, a.attn, out);
  reduce_from_tp_forward(*topo_, out);
  proj_out.add_bias(ops, out);
}

LSAttentionSlotGrads LSAttention::zero_slot_grads(Ops& ops, const LSAttentionSlots& slots) const {
  const DType dt = slots.khat.dtype();
  LSAttentionSlotGrads g;
  g.dkhat = ops.zeros(slots.khat.shape(), dt);
  g.dvhat = ops.zeros(slots.vhat.shape(), dt);
  g.drel_chunk = ops.zeros(slots.rel_chunk.shape(), dt);
  g.drel_window = ops.zeros(slots.rel_window.shape(), dt);
  return g;
}

void LSAttention::backward_piece(Ops& ops, const Tensor& h_ext, int64_t t0, int64_t tokens,
                                 int64_t mem, const LSAttentionSlots& slots, bool output_needed,
                                 const OutputGradient& output_gradient, LSAttentionSlotGrads& grads,
                                 Tensor& dh_ext) {
  const AttentionShape s = piece_shape(h_ext, t0, tokens, mem);
  const DType dt = h_ext.dtype();
  const int64_t B = h_ext.dim(0), n = s.tokens, w = s.window, dl = d_local_;
  const int64_t halo_rows = h_ext.dim(1) - n;
  const PieceActivations a = attend_piece(ops, *this, h_ext, t0, slots, s, cfg_.d_head(), *topo_);
  Tensor out;
  if (output_needed) {
    proj_out.forward(ops, a.attn, out);
    reduce_from_tp_forward(*topo_, out);
    proj_out.add_bias(ops, out);
  }
  Tensor dout = output_gradient(out);
  out = Tensor();

  Tensor dattn = ops.zeros({B, n, dl}, dt);
  reduce_from_tp_backward(*topo_, dout);
  proj_out.backward(ops, dout, a.attn, dattn);
  Tensor delta = ops.empty({B, n_head_local_, n}, dt);
  ops.attention_delta(delta, dattn, a.attn, s);
  Tensor dq = ops.zeros({B, n, dl}, dt);
  ops.chunk_attention_backward(dq, grads.dkhat, grads.dvhat, grads.drel_chunk, dattn, a.lse, delta,
                               a.q, slots.khat, slots.vhat, slots.rel_chunk, s);
  Tensor dkeys_win = ops.zeros({B, w + n, dl}, dt), dvalues_win = ops.zeros({B, w + n, dl}, dt);
  ops.window_attention_backward(dq, dkeys_win, dvalues_win, grads.drel_window, r_w_bias.grad,
                                r_r_bias.grad, dattn, a.lse, delta, a.q, a.keys_win, a.values_win,
                                slots.rel_window, r_w_bias.value, r_r_bias.value, s);
  dattn = Tensor();
  Tensor dkeys_raw = ops.zeros({B, w + n, dl}, dt), dvalues_raw = ops.zeros({B, w + n, dl}, dt);
  dual_ln_win.backward(ops, dkeys_win, a.keys_raw, a.keys_win_ln, dkeys_raw);
  dual_ln_win.backward(ops, dvalues_win, a.values_raw, a.values_win_ln, dvalues_raw);
  dkeys_win = dvalues_win = Tensor();

  // The window rows before the slice's first piece came from the halo: their gradient goes back
  // with the halo exchange (backward_slots); every other row of keys is a row of h_ext.
  Tensor dkeys = dkeys_raw, dvalues = dvalues_raw;
  if (t0 == 0) {
    grads.dhalo_keys = copy_of_rows(ops, dkeys_raw, 0, w);
    grads.dhalo_values = copy_of_rows(ops, dvalues_raw, 0, w);
    dkeys = copy_of_rows(ops, dkeys_raw, w, n);
    dvalues = copy_of_rows(ops, dvalues_raw, w, n);
  }
  Tensor dh_partial = ops.zeros(h_ext.shape(), dt);
  proj_key.backward(ops, dkeys, h_ext, dh_partial);
  proj_val.backward(ops, dvalues, h_ext, dh_partial);
  ops.scale(dq, 1.0 / std::sqrt(static_cast<double>(cfg_.d_head())));
  if (halo_rows == 0) {
    proj_query.backward(ops, dq, a.h, dh_partial);
  } else {
    Tensor dh_rows = ops.zeros(a.h.shape(), dt);
    proj_query.backward(ops, dq, a.h, dh_rows);
    ops.add_rows(dh_partial, halo_rows, dh_rows, 0, n);
  }
  copy_to_tp_backward(*topo_, dh_partial);
  ops.axpy(1.0, dh_partial, dh_ext);
}

void LSAttention::backward_slots(Ops& ops, const RowsOf& rows, int64_t T, int64_t piece,
                                 const Tensor& cache, const PositionTables& pos,
                                 const LSAttentionSlots& slots, LSAttentionSlotGrads& grads,
                                 const RowsGradient& gradient, Tensor& dcache) {
  const DType dt = cache.dtype();
  const int64_t B = cache.dim(0), M = cache.dim(1), d = cfg_.d_model, dl = d_local_;
  const int64_t w = cfg_.window_len, c = cfg_.chunk_size, r = cfg_.chunk_rank, H = cfg_.n_head;
  const int64_t cache_slots = M / c * r, block_slots = T / c * r;
  if (!grads.dhalo_keys.defined())
    throw Error("attention pieces: backward_slots before the piece at row 0");
  Tensor dtail_keys = ops.empty({B, w, dl}, dt), dtail_values = ops.empty({B, w, dl}, dt);
  HaloExchange halo = halo_exchange_backward_start(
      ops, *topo_, grads.dhalo_keys, grads.dhalo_values, dtail_keys, dtail_values, tag_ + 1);
  Tensor none;
  r_net_chunk.backward(ops, grads.drel_chunk, pos.chunk, none);
  r_net.backward(ops, grads.drel_window, pos.window, none);

  // Each slot's gradient back to its owner, then LN_dproj.
  Tensor dkhat_local = gather_chunks_backward(ops, *topo_, grads.dkhat, cache_slots, block_slots);
  Tensor dvhat_local = gather_chunks_backward(ops, *topo_, grads.dvhat, cache_slots, block_slots);
  grads = LSAttentionSlotGrads();
  Tensor dkhat_raw = ops.zeros(slots.khat_raw.shape(), dt),
         dvhat_raw = ops.zeros(slots.vhat_raw.shape(), dt);
  dual_ln_dproj.backward(ops, dkhat_local, slots.khat_raw, slots.khat_ln, dkhat_raw);
  dual_ln_dproj.backward(ops, dvhat_local, slots.vhat_raw, slots.vhat_ln, dvhat_raw);

  // Cache path, whole (M/c r slots and the cache rows), as in LSAttention::backward.
  Tensor dcache_partial = dcache.defined() ? ops.zeros({B, M, d}, dt) : Tensor();
  compress_cache_backward(ops, copy_of_rows(ops, dkhat_raw, 0, cache_slots),
                          copy_of_rows(ops, dvhat_raw, 0, cache_slots), cache, slots.cache_weights,
                          slots.cache_compressed, dcache);

  // The slice's tail: the last slice's is the cache tail, the others' are its last w rows.
  halo.wait();
  if (holds_cache_tail()) {
    Tensor dtail = dcache.defined() ? ops.zeros({B, w, d}, dt) : Tensor();
    proj_key.backward(ops, dtail_keys, slots.cache_tail, dtail);
    proj_val.backward(ops, dtail_values, slots.cache_tail, dtail);
    if (dcache.defined()) ops.add_rows(dcache_partial, M - w, dtail, 0, w);
  }

  // Block path, piece by piece: the chunks' gradient to the keys and values rows and to the
  // compression weights, then to h.
  for (int64_t t0 = 0; t0 < T; t0 += piece) {
    const int64_t n = std::min(piece, T - t0), piece_slots = n / c * r;
    const Tensor h = rows(t0, n);
    Tensor keys, values;
    proj_key.forward(ops, h, keys);
    proj_val.forward(ops, h, values);
    const Tensor weights = copy_of_rows(ops, slots.block_weights, t0, n);
    Tensor dkeys = ops.zeros({B, n, dl}, dt), dvalues = ops.zeros({B, n, dl}, dt);
    Tensor dweights = ops.zeros({B, n, H * r}, dt);
    ops.compress_chunks_backward(
        dkeys, dweights, copy_of_rows(ops, dkhat_raw, cache_slots + t0 / c * r, piece_slots), keys,
        weights, c, r, n_head_local_, head_offset_);
    ops.compress_chunks_backward(
        dvalues, dweights, copy_of_rows(ops, dvhat_raw, cache_slots + t0 / c * r, piece_slots),
        values, weights, c, r, n_head_local_, head_offset_);
    keys = values = Tensor();
    const int64_t tail0 = std::max(t0, T - w);
    if (!holds_cache_tail() && tail0 < t0 + n) {
      ops.add_rows(dkeys, tail0 - t0, dtail_keys, tail0 - (T - w), t0 + n - tail0);
      ops.add_rows(dvalues, tail0 - t0, dtail_values, tail0 - (T - w), t0 + n - tail0);
    }
    split_columns_to_tp_backward(*topo_, dweights);
    Tensor dscores = ops.zeros({B, n, H * r}, dt);
    ops.chunk_softmax_backward(dscores, dweights, weights, c);
    Tensor dh = ops.zeros(h.shape(), dt);
    dconv_1.backward(ops, dscores, h, dh);
    Tensor dh_partial = ops.zeros(h.shape(), dt);
    proj_key.backward(ops, dkeys, h, dh_partial);
    proj_val.backward(ops, dvalues, h, dh_partial);
    copy_to_tp_backward(*topo_, dh_partial);
    ops.axpy(1.0, dh_partial, dh);
    gradient(t0, dh);
  }
  if (dcache.defined()) {
    copy_to_tp_backward(*topo_, dcache_partial);
    ops.axpy(1.0, dcache_partial, dcache);
  }
}

}  // namespace tls
