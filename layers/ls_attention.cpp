#include "layers/ls_attention.h"

#include <cmath>

#include "parallel/chunk_exchange.h"
#include "parallel/halo_exchange.h"
#include "parallel/mappings.h"
#include "kernels/error.h"

namespace tls {

void LSAttention::init(Ops& ops, const std::string& name, const ModelConfig& cfg, DType dtype,
                       const Topology& topo, int layer_index) {
  cfg_ = cfg;
  topo_ = &topo;
  tag_ = 4 * layer_index;
  const int64_t d = cfg.d_model, H = cfg.n_head, dh = cfg.d_head();
  const int tp = topo.layout.tp;
  if (H % tp != 0)
    throw Error("--n-head " + std::to_string(H) + " must be divisible by --tp " +
                std::to_string(tp));
  n_head_local_ = H / tp;
  head_offset_ = topo.tp_rank * n_head_local_;
  d_local_ = n_head_local_ * dh;
  const TpSplit col = TpSplit::column;
  proj_query.init(ops, name + ".proj_query", d, d, cfg.use_bias, dtype, col, &topo);
  proj_key.init(ops, name + ".proj_key", d, d, cfg.use_bias, dtype, col, &topo);
  proj_val.init(ops, name + ".proj_val", d, d, cfg.use_bias, dtype, col, &topo);
  proj_out.init(ops, name + ".proj_out", d, d, cfg.use_bias, dtype, TpSplit::row, &topo);
  r_net.init(ops, name + ".r_net", d, d, false, dtype, col, &topo);
  r_net_chunk.init(ops, name + ".r_net_chunk", d, d, true, dtype, col, &topo);
  dconv_1.init(ops, name + ".dconv_1", d, H * cfg.chunk_rank, true, dtype);
  r_w_bias.allocate(ops, name + ".r_w_bias", {d_local_}, {1, H, 1, 1, dh}, dtype);
  r_r_bias.allocate(ops, name + ".r_r_bias", {d_local_}, {1, H, 1, dh}, dtype);
  if (tp > 1) {
    r_w_bias.shard_along(1, head_offset_, n_head_local_);
    r_r_bias.shard_along(1, head_offset_, n_head_local_);
  }
  if (tp > 1) {
    dual_ln_win.init_split(ops, name + ".dual_ln_win", d, head_offset_ * dh, d_local_, dtype, topo);
    dual_ln_dproj.init_split(ops, name + ".dual_ln_dproj", d, head_offset_ * dh, d_local_, dtype,
                             topo);
  } else {
    dual_ln_win.init(ops, name + ".dual_ln_win", d, dtype);
    dual_ln_dproj.init(ops, name + ".dual_ln_dproj", d, dtype);
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

Tensor slots_of(Ops& ops, const Tensor& cache_part, const Tensor& block_part) {
  const int64_t cache_slots = cache_part.dim(1), block_slots = block_part.dim(1);
  Tensor slots = ops.empty({cache_part.dim(0), cache_slots + block_slots, cache_part.dim(2)},
                           cache_part.dtype());
  ops.copy_rows(slots, 0, cache_part, 0, cache_slots);
  ops.copy_rows(slots, cache_slots, block_part, 0, block_slots);
  return slots;
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

void LSAttention::forward(Ops& ops, const Tensor& h, const Tensor& cache, const PositionTables& pos,
                          Tensor& out, LSAttentionSaved& sv) const {
  const DType dt = h.dtype();
  const int64_t B = h.dim(0), T = h.dim(1), M = cache.dim(1), d = cfg_.d_model, dl = d_local_;
  const int64_t w = cfg_.window_len, c = cfg_.chunk_size, r = cfg_.chunk_rank, H = cfg_.n_head;
  const int64_t cache_slots = M / c * r, block_slots = T / c * r;
  const AttentionShape s = shape(B, T, M);

  sv = LSAttentionSaved();
  copy_to_tp_forward(*topo_, h);
  proj_query.forward(ops, h, sv.q);
  ops.scale(sv.q, 1.0 / std::sqrt(static_cast<double>(cfg_.d_head())));
  proj_key.forward(ops, h, sv.keys_block);
  proj_val.forward(ops, h, sv.values_block);

  // Window halo: this rank's tail goes to the next slice (the last slice's tail is the cache
  // tail, which wraps around to slice 0).
  Tensor tail_keys, tail_values;
  if (holds_cache_tail()) {
    sv.cache_tail = ops.empty({B, w, d}, dt);
    ops.copy_rows(sv.cache_tail, 0, cache, M - w, w);
    proj_key.forward(ops, sv.cache_tail, tail_keys);
    proj_val.forward(ops, sv.cache_tail, tail_values);
  } else {
    tail_keys = ops.empty({B, w, dl}, dt);
    tail_values = ops.empty({B, w, dl}, dt);
    ops.copy_rows(tail_keys, 0, sv.keys_block, T - w, w);
    ops.copy_rows(tail_values, 0, sv.values_block, T - w, w);
  }
  Tensor halo_keys = ops.empty({B, w, dl}, dt), halo_values = ops.empty({B, w, dl}, dt);
  HaloExchange halo = halo_exchange_forward_start(ops, *topo_, tail_keys, tail_values, halo_keys,
                                                  halo_values, tag_);

  // Compressed part (needs no halo): weights, compression, LN_dproj, gather over sp.
  Tensor scores;
  dconv_1.forward(ops, h, scores);
  sv.block_weights = ops.empty({B, T, H * r}, dt);
  ops.chunk_softmax_forward(sv.block_weights, scores, c);
  Tensor keys_cache, values_cache;
  compress_cache(ops, cache, sv.cache_weights, sv.cache_compressed, keys_cache, values_cache);
  // Block chunks: project (above), then compress with this rank's heads' weights.
  Tensor keys_chunks = ops.empty({B, block_slots, dl}, dt);
  Tensor values_chunks = ops.empty({B, block_slots, dl}, dt);
  ops.compress_chunks_forward(keys_chunks, sv.keys_block, sv.block_weights, c, r, n_head_local_,
                              head_offset_);
  ops.compress_chunks_forward(values_chunks, sv.values_block, sv.block_weights, c, r, n_head_local_,
                              head_offset_);
  sv.khat_raw = slots_of(ops, keys_cache, keys_chunks);
  sv.vhat_raw = slots_of(ops, values_cache, values_chunks);
  dual_ln_dproj.forward(ops, sv.khat_raw, sv.khat_local, sv.khat_ln);
  dual_ln_dproj.forward(ops, sv.vhat_raw, sv.vhat_local, sv.vhat_ln);
  // The slots of every slice: gathered over sp while the window part runs.
  ChunkExchange khat_gather = gather_chunks_forward_start(ops, *topo_, sv.khat_local, cache_slots);
  ChunkExchange vhat_gather = gather_chunks_forward_start(ops, *topo_, sv.vhat_local, cache_slots);

  // Window part: [halo ; block] keys and values through LN_win.
  halo.wait();
  sv.keys_raw = ops.empty({B, w + T, dl}, dt);
  sv.values_raw = ops.empty({B, w + T, dl}, dt);
  ops.copy_rows(sv.keys_raw, 0, halo_keys, 0, w);
  ops.copy_rows(sv.keys_raw, w, sv.keys_block, 0, T);
  ops.copy_rows(sv.values_raw, 0, halo_values, 0, w);
  ops.copy_rows(sv.values_raw, w, sv.values_block, 0, T);
  dual_ln_win.forward(ops, sv.keys_raw, sv.keys_win, sv.keys_win_ln);
  dual_ln_win.forward(ops, sv.values_raw, sv.values_win, sv.values_win_ln);
  r_net.forward(ops, pos.window, sv.rel_window);
  Tensor out_win = ops.empty({B, T, dl}, dt), lse_win = ops.empty({B, n_head_local_, T}, dt);
  ops.window_attention_forward(out_win, lse_win, sv.q, sv.keys_win, sv.values_win, sv.rel_window,
                               r_w_bias.value, r_r_bias.value, s);

  // Compressed attention over the gathered slots.
  sv.khat = khat_gather.wait();
  sv.vhat = vhat_gather.wait();
  r_net_chunk.forward(ops, pos.chunk, sv.rel_chunk);
  Tensor out_chunk = ops.empty({B, T, dl}, dt), lse_chunk = ops.empty({B, n_head_local_, T}, dt);
  ops.chunk_attention_forward(out_chunk, lse_chunk, sv.q, sv.khat, sv.vhat, sv.rel_chunk, s);

  sv.attn = ops.empty({B, T, dl}, dt);
  sv.lse = ops.empty({B, n_head_local_, T}, dt);
  ops.attention_merge(sv.attn, sv.lse, out_chunk, lse_chunk, out_win, lse_win, s);
  proj_out.forward(ops, sv.attn, out);
  reduce_from_tp_forward(*topo_, out);
  proj_out.add_bias(ops, out);
}

void LSAttention::backward(Ops& ops, const Tensor& dout, const Tensor& h, const Tensor& cache,
                           const PositionTables& pos, const LSAttentionSaved& sv, Tensor& dh,
                           Tensor& dcache) {
  const DType dt = h.dtype();
  const int64_t B = h.dim(0), T = h.dim(1), M = cache.dim(1), d = cfg_.d_model, dl = d_local_;
  const int64_t w = cfg_.window_len, c = cfg_.chunk_size, r = cfg_.chunk_rank, H = cfg_.n_head;
  const int64_t cache_slots = M / c * r, block_slots = T / c * r;
  const AttentionShape s = shape(B, T, M);
  // Gradients through this rank's heads only are partial over tp; they are summed once at the
  // end (copy_to_tp's backward). The compression weights' paths are assembled earlier.
  Tensor dh_partial = ops.zeros({B, T, d}, dt);
  Tensor dcache_partial = dcache.defined() ? ops.zeros({B, M, d}, dt) : Tensor();

  Tensor dattn = ops.zeros({B, T, dl}, dt);
  Tensor dout_partial = dout;
  reduce_from_tp_backward(*topo_, dout_partial);
  proj_out.backward(ops, dout_partial, sv.attn, dattn);
  Tensor delta = ops.empty({B, n_head_local_, T}, dt);
  ops.attention_delta(delta, dattn, sv.attn, s);

  Tensor dq = ops.zeros({B, T, dl}, dt);
  Tensor dkhat = ops.zeros(sv.khat.shape(), dt), dvhat = ops.zeros(sv.vhat.shape(), dt);
  Tensor drel_chunk = ops.zeros(sv.rel_chunk.shape(), dt);
  ops.chunk_attention_backward(dq, dkhat, dvhat, drel_chunk, dattn, sv.lse, delta, sv.q, sv.khat,
                               sv.vhat, sv.rel_chunk, s);
  // Each slot's gradient back to its owner, while the window part's backward runs.
  ChunkExchange dkhat_scatter =
      gather_chunks_backward_start(ops, *topo_, dkhat, cache_slots, block_slots);
  ChunkExchange dvhat_scatter =
      gather_chunks_backward_start(ops, *topo_, dvhat, cache_slots, block_slots);
  Tensor dkeys_win = ops.zeros({B, w + T, dl}, dt), dvalues_win = ops.zeros({B, w + T, dl}, dt);
  Tensor drel_window = ops.zeros(sv.rel_window.shape(), dt);
  ops.window_attention_backward(dq, dkeys_win, dvalues_win, drel_window, r_w_bias.grad,
                                r_r_bias.grad, dattn, sv.lse, delta, sv.q, sv.keys_win,
                                sv.values_win, sv.rel_window, r_w_bias.value, r_r_bias.value, s);
  Tensor none;
  r_net_chunk.backward(ops, drel_chunk, pos.chunk, none);
  r_net.backward(ops, drel_window, pos.window, none);

  // Window: back through LN_win; the halo rows' gradient returns to the rank that sent them.
  Tensor dkeys_raw = ops.zeros({B, w + T, dl}, dt), dvalues_raw = ops.zeros({B, w + T, dl}, dt);
  dual_ln_win.backward(ops, dkeys_win, sv.keys_raw, sv.keys_win_ln, dkeys_raw);
  dual_ln_win.backward(ops, dvalues_win, sv.values_raw, sv.values_win_ln, dvalues_raw);
  Tensor dhalo_keys = ops.empty({B, w, dl}, dt), dhalo_values = ops.empty({B, w, dl}, dt);
  ops.copy_rows(dhalo_keys, 0, dkeys_raw, 0, w);
  ops.copy_rows(dhalo_values, 0, dvalues_raw, 0, w);
  Tensor dtail_keys = ops.empty({B, w, dl}, dt), dtail_values = ops.empty({B, w, dl}, dt);
  HaloExchange halo = halo_exchange_backward_start(ops, *topo_, dhalo_keys, dhalo_values,
                                                   dtail_keys, dtail_values, tag_ + 1);
  Tensor dkeys_block = ops.zeros({B, T, dl}, dt), dvalues_block = ops.zeros({B, T, dl}, dt);
  ops.add_rows(dkeys_block, 0, dkeys_raw, w, T);
  ops.add_rows(dvalues_block, 0, dvalues_raw, w, T);

  // Compressed: this rank's slots' summed gradient, then LN_dproj.
  Tensor dkhat_local = dkhat_scatter.wait();
  Tensor dvhat_local = dvhat_scatter.wait();
  Tensor dkhat_raw = ops.zeros(sv.khat_raw.shape(), dt),
         dvhat_raw = ops.zeros(sv.vhat_raw.shape(), dt);
  dual_ln_dproj.backward(ops, dkhat_local, sv.khat_raw, sv.khat_ln, dkhat_raw);
  dual_ln_dproj.backward(ops, dvhat_local, sv.vhat_raw, sv.vhat_ln, dvhat_raw);
  Tensor dkeys_cache = ops.empty({B, cache_slots, dl}, dt),
         dvalues_cache = ops.empty({B, cache_slots, dl}, dt);
  ops.copy_rows(dkeys_cache, 0, dkhat_raw, 0, cache_slots);
  ops.copy_rows(dvalues_cache, 0, dvhat_raw, 0, cache_slots);
  Tensor dkeys_chunks = ops.empty({B, block_slots, dl}, dt),
         dvalues_chunks = ops.empty({B, block_slots, dl}, dt);
  ops.copy_rows(dkeys_chunks, 0, dkhat_raw, cache_slots, block_slots);
  ops.copy_rows(dvalues_chunks, 0, dvhat_raw, cache_slots, block_slots);

  compress_cache_backward(ops, dkeys_cache, dvalues_cache, cache, sv.cache_weights,
                          sv.cache_compressed, dcache);

  // Block path: each tp rank filled only its heads' weight columns; assembling them is exact.
  Tensor dblock_weights = ops.zeros({B, T, H * r}, dt);
  ops.compress_chunks_backward(dkeys_block, dblock_weights, dkeys_chunks, sv.keys_block,
                               sv.block_weights, c, r, n_head_local_, head_offset_);
  ops.compress_chunks_backward(dvalues_block, dblock_weights, dvalues_chunks, sv.values_block,
                               sv.block_weights, c, r, n_head_local_, head_offset_);
  split_columns_to_tp_backward(*topo_, dblock_weights);
  Tensor dscores = ops.zeros({B, T, H * r}, dt);
  ops.chunk_softmax_backward(dscores, dblock_weights, sv.block_weights, c);
  dconv_1.backward(ops, dscores, h, dh);

  // This rank's tail: the last slice's is the cache tail, the others' are block rows.
  halo.wait();
  if (holds_cache_tail()) {
    Tensor dtail = dcache.defined() ? ops.zeros({B, w, d}, dt) : Tensor();
    proj_key.backward(ops, dtail_keys, sv.cache_tail, dtail);
    proj_val.backward(ops, dtail_values, sv.cache_tail, dtail);
    if (dcache.defined()) ops.add_rows(dcache_partial, M - w, dtail, 0, w);
  } else {
    ops.add_rows(dkeys_block, T - w, dtail_keys, 0, w);
    ops.add_rows(dvalues_block, T - w, dtail_values, 0, w);
  }

  proj_key.backward(ops, dkeys_block, h, dh_partial);
  proj_val.backward(ops, dvalues_block, h, dh_partial);
  ops.scale(dq, 1.0 / std::sqrt(static_cast<double>(cfg_.d_head())));
  proj_query.backward(ops, dq, h, dh_partial);
  copy_to_tp_backward(*topo_, dh_partial);
  ops.axpy(1.0, dh_partial, dh);
  if (dcache.defined()) {
    copy_to_tp_backward(*topo_, dcache_partial);
    ops.axpy(1.0, dcache_partial, dcache);
  }
}

}  // namespace tls
