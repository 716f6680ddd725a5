// LSAttention: the module, its parameters and the pass over the block's pieces; the steps the
// pass is made of are in ls_attention_slots.cpp.
#include "layers/ls_attention.h"

#include "kernels/error.h"
#include "parallel/mappings.h"

namespace tls {
Tensor copy_of_rows(Ops& ops, const Tensor& x, int64_t row0, int64_t n) {
  Tensor out = ops.empty({x.dim(0), n, x.dim(2)}, x.dtype());
  ops.copy_rows(out, 0, x, row0, n);
  return out;
}

std::vector<Piece> pieces_of(int64_t tokens, int64_t piece) {
  std::vector<Piece> out;
  for (int64_t t0 = 0; t0 < tokens; t0 += piece) out.push_back({t0, std::min(piece, tokens - t0)});
  return out;
}

void LSAttention::init(Ops& ops, ParameterList& params, const std::string& name,
                       const ModelConfig& cfg, DType dtype, const Topology& topo, int layer_index) {
  cfg_ = cfg;
  topo_ = &topo;
  tag_ = 8 * layer_index;  // halo: tag_, tag_ + 1; slot ring: tag_ + 2, tag_ + 3 (2 tags each)
  const int64_t d = cfg.d_model, H = cfg.n_head, dh = cfg.d_head();
  const int tp = topo.layout.tp;
  if (H % tp != 0)
    throw Error("--n-head " + std::to_string(H) + " must be divisible by --tp " +
                std::to_string(tp));
  n_head_local_ = H / tp;
  head_offset_ = topo.tp_rank * n_head_local_;
  d_local_ = n_head_local_ * dh;
  const TpSplit col = TpSplit::column;
  proj_query.init(ops, params, name + ".proj_query", d, d, cfg.use_bias, dtype, col, &topo);
  proj_key.init(ops, params, name + ".proj_key", d, d, cfg.use_bias, dtype, col, &topo);
  proj_val.init(ops, params, name + ".proj_val", d, d, cfg.use_bias, dtype, col, &topo);
  proj_out.init(ops, params, name + ".proj_out", d, d, cfg.use_bias, dtype, TpSplit::row, &topo);
  r_net.init(ops, params, name + ".r_net", d, d, false, dtype, col, &topo);
  r_net_chunk.init(ops, params, name + ".r_net_chunk", d, d, true, dtype, col, &topo);
  dconv_1.init(ops, params, name + ".dconv_1", d, H * cfg.chunk_rank, true, dtype);
  params.allocate(ops, r_w_bias, ParameterGroup::head_vector, name + ".r_w_bias", {d_local_},
                  {1, H, 1, 1, dh}, dtype);
  params.allocate(ops, r_r_bias, ParameterGroup::head_vector, name + ".r_r_bias", {d_local_},
                  {1, H, 1, dh}, dtype);
  if (tp > 1) {
    r_w_bias.shard_along(1, head_offset_, n_head_local_);
    r_r_bias.shard_along(1, head_offset_, n_head_local_);
    dual_ln_win.init_split(ops, params, name + ".dual_ln_win", d, head_offset_ * dh, d_local_,
                           dtype, topo);
    dual_ln_dproj.init_split(ops, params, name + ".dual_ln_dproj", d, head_offset_ * dh, d_local_,
                             dtype, topo);
  } else {
    dual_ln_win.init(ops, params, name + ".dual_ln_win", d, dtype);
    dual_ln_dproj.init(ops, params, name + ".dual_ln_dproj", d, dtype);
  }
}

AttentionShape LSAttention::shape(int64_t batch, int64_t tokens, int64_t mem) const {
  AttentionShape s;
  s.batch = batch;
  s.tokens = tokens;
  s.n_head = n_head_local_;
  s.d_head = cfg_.d_head();
  s.window = cfg_.window_len;
  s.chunk_size = cfg_.chunk_size;
  s.chunk_rank = cfg_.chunk_rank;
  // Global chunk index of this slice's first query: after every cache chunk and the earlier
  // slices' block chunks (M_global = M_local * sp; sp > 1 requires M = T).
  s.first_query_chunk =
      mem * topo_->layout.sp / cfg_.chunk_size + topo_->sp_rank * tokens / cfg_.chunk_size;
  return s;
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

Tensor slots_of(Ops& ops, const Tensor& cache_part, const Tensor& block_part) {
  const int64_t cache_slots = cache_part.dim(1), block_slots = block_part.dim(1);
  Tensor slots = ops.empty({cache_part.dim(0), cache_slots + block_slots, cache_part.dim(2)},
                           cache_part.dtype());
  ops.copy_rows(slots, 0, cache_part, 0, cache_slots);
  ops.copy_rows(slots, cache_slots, block_part, 0, block_slots);
  return slots;
}

void LSAttention::forward(Ops& ops, const Tensor& h, const Tensor& cache, const PositionTables& pos,
                          Tensor& out, LSAttentionSaved& saved) const {
  const Piece whole{0, h.dim(1)};
  forward_slots(
      ops, [&](int64_t, int64_t) { return h; }, whole.n, {whole}, true, cache, pos, saved);
  forward_piece(ops, h, whole, whole.n, cache.dim(1), saved, out);
}

void LSAttention::backward(Ops& ops, const Tensor& dout, const Tensor& h, const Tensor& cache,
                           const PositionTables& pos, const LSAttentionSaved& saved, Tensor& dh,
                           Tensor& dcache) {
  const Piece whole{0, h.dim(1)};
  LSAttentionSlotGrads grads = zero_slot_grads(ops, saved);
  backward_piece(
      ops, h, whole, whole.n, cache.dim(1), saved, false, [&](const Tensor&) { return dout; },
      grads, dh);
  backward_slots(
      ops, [&](int64_t, int64_t) { return h; }, whole.n, cache, pos, saved, grads, nullptr, dcache);
}

void LSAttention::forward_slots(Ops& ops, const RowsOf& rows, int64_t T, std::vector<Piece> pieces,
                                bool keep, const Tensor& cache, const PositionTables& pos,
                                LSAttentionSaved& saved) const {
  const DType dt = cache.dtype();
  const int64_t B = cache.dim(0), dl = d_local_;
  const int64_t w = cfg_.window_len, c = cfg_.chunk_size, r = cfg_.chunk_rank, H = cfg_.n_head;
  const int64_t block_slots = T / c * r;
  if (keep && (pieces.size() != 1 || pieces[0].n != T))
    throw Error("attention: kept activations need the block as one piece");
  saved = LSAttentionSaved();
  saved.keep = keep;
  saved.pieces = std::move(pieces);
  LSAttentionSlots& slots = saved.slots;

  // Block chunks, piece by piece. The slice's last w rows of keys and values are its tail, the
  // next slice's halo.
  Tensor keys_chunks = ops.empty({B, block_slots, dl}, dt);
  Tensor values_chunks = ops.empty({B, block_slots, dl}, dt);
  slots.block_weights = ops.empty({B, T, H * r}, dt);
  Tensor tail_keys = ops.empty({B, w, dl}, dt), tail_values = ops.empty({B, w, dl}, dt);
  for (const Piece& p : saved.pieces) {
    const Tensor h = rows(p.t0, p.n);
    Tensor keys, values;
    project_keys_values(ops, h, keys, values);
    compress_block_rows(ops, h, keys, values, p.t0, slots.block_weights, keys_chunks,
                        values_chunks);
    const int64_t tail0 = std::max(p.t0, T - w);  // rows [tail0, t0 + n) are tail rows
    if (!holds_cache_tail() && tail0 < p.t0 + p.n) {
      ops.copy_rows(tail_keys, tail0 - (T - w), keys, tail0 - p.t0, p.t0 + p.n - tail0);
      ops.copy_rows(tail_values, tail0 - (T - w), values, tail0 - p.t0, p.t0 + p.n - tail0);
    }
    if (keep) {
      saved.kept.keys = keys;
      saved.kept.values = values;
    }
  }
  if (holds_cache_tail()) project_tail(ops, cache, slots, tail_keys, tail_values);
  slots.halo_keys = ops.empty({B, w, dl}, dt);
  slots.halo_values = ops.empty({B, w, dl}, dt);
  slots.halo = halo_exchange_forward_start(ops, *topo_, tail_keys, tail_values, slots.halo_keys,
                                           slots.halo_values, tag_);

  // Compressed part (needs no halo): cache chunks, then LN_dproj. Each rank keeps its own slots;
  // the pieces meet the other ranks' slots round the sp ring.
  Tensor keys_cache, values_cache;
  compress_cache(ops, cache, slots.cache_weights, slots.cache_compressed, keys_cache, values_cache);
  slots.khat_raw = slots_of(ops, keys_cache, keys_chunks);
  slots.vhat_raw = slots_of(ops, values_cache, values_chunks);
  dual_ln_dproj.forward(ops, slots.khat_raw, slots.khat, slots.khat_ln);
  dual_ln_dproj.forward(ops, slots.vhat_raw, slots.vhat, slots.vhat_ln);
  slots.in_flight = true;
  r_net.forward(ops, pos.window, slots.rel_window);
  slots.chunk_ids = pos.chunk_ids;
}

void LSAttention::forward_piece(Ops& ops, const Tensor& h_ext, const Piece& piece, int64_t tokens,
                                int64_t mem, LSAttentionSaved& saved, Tensor& out) const {
  const AttentionShape s = piece_shape(h_ext, piece.t0, tokens, mem);
  PieceActivations recomputed;
  PieceActivations& a = saved.keep ? saved.kept : recomputed;
  LSAttentionSlots& slots = saved.slots;
  attend(ops, h_ext, piece.t0, slots, s, a, slots.in_flight ? &slots : nullptr);
  out = Tensor();
  proj_out.forward(ops, a.attn, out);
}

LSAttentionSlotGrads LSAttention::zero_slot_grads(Ops& ops, const LSAttentionSaved& saved) const {
  const LSAttentionSlots& slots = saved.slots;
  const DType dt = slots.khat.dtype();
  LSAttentionSlotGrads g;
  g.dkhat = ops.zeros(slots.khat.shape(), dt);
  g.dvhat = ops.zeros(slots.vhat.shape(), dt);
  g.drel_window = ops.zeros(slots.rel_window.shape(), dt);
  return g;
}

void LSAttention::backward_piece(Ops& ops, const Tensor& h_ext, const Piece& piece, int64_t tokens,
                                 int64_t mem, const LSAttentionSaved& saved, bool output_needed,
                                 const OutputGradient& output_gradient, LSAttentionSlotGrads& grads,
                                 Tensor& dh_ext) {
  const AttentionShape s = piece_shape(h_ext, piece.t0, tokens, mem);
  PieceActivations recomputed;
  if (saved.slots.in_flight) throw Error("attention: backward before the forward's first piece");
  if (!saved.keep) attend(ops, h_ext, piece.t0, saved.slots, s, recomputed, nullptr);
  const PieceActivations& a = saved.keep ? saved.kept : recomputed;
  Tensor out;
  if (output_needed) proj_out.forward(ops, a.attn, out);
  Tensor dout = output_gradient(out);
  out = Tensor();

  Tensor dq, dkeys, dvalues;
  attend_backward(ops, dout, a, saved.slots, piece.t0, s, grads, dq, dkeys, dvalues);
  if (saved.keep) {
    // The rows' gradient is completed by backward_slots, with the compression's share.
    grads.dkeys = dkeys;
    grads.dvalues = dvalues;
    grads.dq = dq;
    grads.dinput = dh_ext;
    return;
  }
  project_back(ops, h_ext, a.h, dkeys, dvalues, dq, dh_ext);
}

void LSAttention::backward_slots(Ops& ops, const RowsOf& rows, int64_t T, const Tensor& cache,
                                 const PositionTables& pos, const LSAttentionSaved& saved,
                                 LSAttentionSlotGrads& grads, const RowsGradient& gradient,
                                 Tensor& dcache) {
  const LSAttentionSlots& slots = saved.slots;
  const DType dt = cache.dtype();
  const int64_t B = cache.dim(0), M = cache.dim(1), d = cfg_.d_model, dl = d_local_;
  const int64_t w = cfg_.window_len, c = cfg_.chunk_size, r = cfg_.chunk_rank;
  const int64_t cache_slots = M / c * r;
  if (!grads.dhalo_keys.defined())
    throw Error("attention pieces: backward_slots before the piece at row 0");
  Tensor none;
  r_net.backward(ops, grads.drel_window, pos.window, none);

  // This rank's slots' summed gradient, then LN_dproj.
  const Tensor dkhat_local = grads.dkhat, dvhat_local = grads.dvhat;
  grads.dkhat = grads.dvhat = grads.drel_window = Tensor();
  Tensor dkhat_raw = ops.zeros(slots.khat_raw.shape(), dt);
  Tensor dvhat_raw = ops.zeros(slots.vhat_raw.shape(), dt);
  dual_ln_dproj.backward(ops, dkhat_local, slots.khat_raw, slots.khat_ln, dkhat_raw);
  dual_ln_dproj.backward(ops, dvhat_local, slots.vhat_raw, slots.vhat_ln, dvhat_raw);

  // Cache path, whole (M/c r slots and the cache rows).
  Tensor dcache_partial = dcache.defined() ? ops.zeros({B, M, d}, dt) : Tensor();
  compress_cache_backward(ops, copy_of_rows(ops, dkhat_raw, 0, cache_slots),
                          copy_of_rows(ops, dvhat_raw, 0, cache_slots), cache, slots.cache_weights,
                          slots.cache_compressed, dcache);

  // The slice's tail: the last slice's is the cache tail, the others' are its last w rows.
  grads.halo.wait();
  if (holds_cache_tail())
    project_tail_backward(ops, slots, grads.dtail_keys, grads.dtail_values, dcache_partial);

  // Block path, piece by piece: the chunks' gradient to the keys and values rows and to the
  // compression weights, then to the rows.
  for (const Piece& p : saved.pieces) {
    const int64_t piece_slots = p.n / c * r, slot0 = cache_slots + p.t0 / c * r;
    const Tensor h = rows(p.t0, p.n);
    Tensor keys = saved.kept.keys, values = saved.kept.values;
    Tensor dkeys = grads.dkeys, dvalues = grads.dvalues, dh = grads.dinput;
    Tensor weights = slots.block_weights;
    if (!saved.keep) {
      project_keys_values(ops, h, keys, values);
      weights = copy_of_rows(ops, slots.block_weights, p.t0, p.n);
      dkeys = ops.zeros({B, p.n, dl}, dt);
      dvalues = ops.zeros({B, p.n, dl}, dt);
      dh = ops.zeros(h.shape(), dt);
    }
    compress_block_rows_backward(
        ops, h, keys, values, weights, copy_of_rows(ops, dkhat_raw, slot0, piece_slots),
        copy_of_rows(ops, dvhat_raw, slot0, piece_slots), dkeys, dvalues, dh);
    const int64_t tail0 = std::max(p.t0, T - w);
    if (!holds_cache_tail() && tail0 < p.t0 + p.n) {
      ops.add_rows(dkeys, tail0 - p.t0, grads.dtail_keys, tail0 - (T - w), p.t0 + p.n - tail0);
      ops.add_rows(dvalues, tail0 - p.t0, grads.dtail_values, tail0 - (T - w), p.t0 + p.n - tail0);
    }
    if (saved.keep) {
      // The piece's window share and queries join in one sum per row.
      project_back(ops, h, saved.kept.h, dkeys, dvalues, grads.dq, dh);
    } else {
      Tensor no_queries;
      project_back(ops, h, h, dkeys, dvalues, no_queries, dh);
      gradient(p.t0, dh);
    }
  }
  grads = LSAttentionSlotGrads();
  if (dcache.defined()) {
    copy_to_tp_backward(*topo_, dcache_partial);
    ops.axpy(1.0, dcache_partial, dcache);
  }
}

}  // namespace tls
