#include "layers/ls_attention.h"

#include <cmath>

namespace tls {

void LSAttention::init(Ops& ops, const std::string& name, const ModelConfig& cfg, DType dtype) {
  cfg_ = cfg;
  const int64_t d = cfg.d_model, H = cfg.n_head, dh = cfg.d_head();
  proj_query.init(ops, name + ".proj_query", d, d, cfg.use_bias, dtype);
  proj_key.init(ops, name + ".proj_key", d, d, cfg.use_bias, dtype);
  proj_val.init(ops, name + ".proj_val", d, d, cfg.use_bias, dtype);
  proj_out.init(ops, name + ".proj_out", d, d, cfg.use_bias, dtype);
  r_net.init(ops, name + ".r_net", d, d, false, dtype);
  r_net_chunk.init(ops, name + ".r_net_chunk", d, d, true, dtype);
  dconv_1.init(ops, name + ".dconv_1", d, H * cfg.chunk_rank, true, dtype);
  r_w_bias.allocate(ops, name + ".r_w_bias", {d}, {1, H, 1, 1, dh}, dtype);
  r_r_bias.allocate(ops, name + ".r_r_bias", {d}, {1, H, 1, dh}, dtype);
  dual_ln_win.init(ops, name + ".dual_ln_win", d, dtype);
  dual_ln_dproj.init(ops, name + ".dual_ln_dproj", d, dtype);
}

AttentionShape LSAttention::shape(int64_t batch) const {
  AttentionShape s;
  s.batch = batch;
  s.tokens = cfg_.tokens_per_sample;
  s.n_head = cfg_.n_head;
  s.d_head = cfg_.d_head();
  s.window = cfg_.window_len;
  s.chunk_size = cfg_.chunk_size;
  s.chunk_rank = cfg_.chunk_rank;
  s.first_query_chunk = cfg_.n_mem_chunks();
  return s;
}

void LSAttention::forward(Ops& ops, const Tensor& h, const Tensor& cache, const PositionTables& pos,
                          Tensor& out, LSAttentionSaved& sv) const {
  const DType dt = h.dtype();
  const int64_t B = h.dim(0), T = h.dim(1), M = cache.dim(1), d = cfg_.d_model;
  const int64_t w = cfg_.window_len, c = cfg_.chunk_size, r = cfg_.chunk_rank, H = cfg_.n_head;
  const int64_t mem_slots = M / c * r, block_slots = T / c * r, S = mem_slots + block_slots;
  AttentionShape s = shape(B);
  s.tokens = T;
  s.first_query_chunk = M / c;

  sv = LSAttentionSaved();
  proj_query.forward(ops, h, sv.q);
  ops.scale(sv.q, 1.0 / std::sqrt(static_cast<double>(cfg_.d_head())));
  proj_key.forward(ops, h, sv.keys_block);
  proj_val.forward(ops, h, sv.values_block);

  // Window keys/values: the w cache rows before the block, then the block.
  sv.cache_tail = ops.empty({B, w, d}, dt);
  ops.copy_rows(sv.cache_tail, 0, cache, M - w, w);
  Tensor keys_tail, values_tail;
  proj_key.forward(ops, sv.cache_tail, keys_tail);
  proj_val.forward(ops, sv.cache_tail, values_tail);
  sv.keys_raw = ops.empty({B, w + T, d}, dt);
  sv.values_raw = ops.empty({B, w + T, d}, dt);
  ops.copy_rows(sv.keys_raw, 0, keys_tail, 0, w);
  ops.copy_rows(sv.keys_raw, w, sv.keys_block, 0, T);
  ops.copy_rows(sv.values_raw, 0, values_tail, 0, w);
  ops.copy_rows(sv.values_raw, w, sv.values_block, 0, T);
  dual_ln_win.forward(ops, sv.keys_raw, sv.keys_win, sv.keys_win_ln);
  dual_ln_win.forward(ops, sv.values_raw, sv.values_win, sv.values_win_ln);
  r_net.forward(ops, pos.window, sv.rel_window);

  // Compression weights, softmax over each chunk's c rows per (head, k).
  Tensor scores;
  dconv_1.forward(ops, cache, scores);
  sv.cache_weights = ops.empty({B, M, H * r}, dt);
  ops.chunk_softmax_forward(sv.cache_weights, scores, c);
  scores = Tensor();
  dconv_1.forward(ops, h, scores);
  sv.block_weights = ops.empty({B, T, H * r}, dt);
  ops.chunk_softmax_forward(sv.block_weights, scores, c);

  // Cache chunks: compress the raw rows per head, merge heads, then project.
  sv.cache_compressed = ops.empty({B, mem_slots, d}, dt);
  ops.compress_chunks_forward(sv.cache_compressed, cache, sv.cache_weights, c, r, H, 0);
  Tensor keys_cache, values_cache;
  proj_key.forward(ops, sv.cache_compressed, keys_cache);
  proj_val.forward(ops, sv.cache_compressed, values_cache);
  // Block chunks: project (done above), then compress.
  Tensor keys_chunks = ops.empty({B, block_slots, d}, dt);
  Tensor values_chunks = ops.empty({B, block_slots, d}, dt);
  ops.compress_chunks_forward(keys_chunks, sv.keys_block, sv.block_weights, c, r, H, 0);
  ops.compress_chunks_forward(values_chunks, sv.values_block, sv.block_weights, c, r, H, 0);
  sv.khat_raw = ops.empty({B, S, d}, dt);
  sv.vhat_raw = ops.empty({B, S, d}, dt);
  ops.copy_rows(sv.khat_raw, 0, keys_cache, 0, mem_slots);
  ops.copy_rows(sv.khat_raw, mem_slots, keys_chunks, 0, block_slots);
  ops.copy_rows(sv.vhat_raw, 0, values_cache, 0, mem_slots);
  ops.copy_rows(sv.vhat_raw, mem_slots, values_chunks, 0, block_slots);
  dual_ln_dproj.forward(ops, sv.khat_raw, sv.khat, sv.khat_ln);
  dual_ln_dproj.forward(ops, sv.vhat_raw, sv.vhat, sv.vhat_ln);
  r_net_chunk.forward(ops, pos.chunk, sv.rel_chunk);

  // The two parts, merged into one softmax.
  Tensor out_win = ops.empty({B, T, d}, dt), lse_win = ops.empty({B, H, T}, dt);
  Tensor out_chunk = ops.empty({B, T, d}, dt), lse_chunk = ops.empty({B, H, T}, dt);
  ops.window_attention_forward(out_win, lse_win, sv.q, sv.keys_win, sv.values_win, sv.rel_window,
                               r_w_bias.value, r_r_bias.value, s);
  ops.chunk_attention_forward(out_chunk, lse_chunk, sv.q, sv.khat, sv.vhat, sv.rel_chunk, s);
  sv.attn = ops.empty({B, T, d}, dt);
  sv.lse = ops.empty({B, H, T}, dt);
  ops.attention_merge(sv.attn, sv.lse, out_chunk, lse_chunk, out_win, lse_win, s);
  proj_out.forward(ops, sv.attn, out);
}

void LSAttention::backward(Ops& ops, const Tensor& dout, const Tensor& h, const Tensor& cache,
                           const PositionTables& pos, const LSAttentionSaved& sv, Tensor& dh,
                           Tensor& dcache) {
  const DType dt = h.dtype();
  const int64_t B = h.dim(0), T = h.dim(1), M = cache.dim(1), d = cfg_.d_model;
  const int64_t w = cfg_.window_len, c = cfg_.chunk_size, r = cfg_.chunk_rank, H = cfg_.n_head;
  const int64_t mem_slots = M / c * r, block_slots = T / c * r, S = mem_slots + block_slots;
  AttentionShape s = shape(B);
  s.tokens = T;
  s.first_query_chunk = M / c;

  Tensor dattn = ops.zeros({B, T, d}, dt);
  proj_out.backward(ops, dout, sv.attn, dattn);
  Tensor delta = ops.empty({B, H, T}, dt);
  ops.attention_delta(delta, dattn, sv.attn, s);

  Tensor dq = ops.zeros({B, T, d}, dt);
  Tensor dkhat = ops.zeros({B, S, d}, dt), dvhat = ops.zeros({B, S, d}, dt);
  Tensor drel_chunk = ops.zeros(sv.rel_chunk.shape(), dt);
  ops.chunk_attention_backward(dq, dkhat, dvhat, drel_chunk, dattn, sv.lse, delta, sv.q, sv.khat,
                               sv.vhat, sv.rel_chunk, s);
  Tensor dkeys_win = ops.zeros({B, w + T, d}, dt), dvalues_win = ops.zeros({B, w + T, d}, dt);
  Tensor drel_window = ops.zeros(sv.rel_window.shape(), dt);
  ops.window_attention_backward(dq, dkeys_win, dvalues_win, drel_window, r_w_bias.grad,
                                r_r_bias.grad, dattn, sv.lse, delta, sv.q, sv.keys_win,
                                sv.values_win, sv.rel_window, r_w_bias.value, r_r_bias.value, s);
  Tensor none;
  r_net_chunk.backward(ops, drel_chunk, pos.chunk, none);
  r_net.backward(ops, drel_window, pos.window, none);

  // Compressed keys/values back through LN_dproj, split into cache and block slots.
  Tensor dkhat_raw = ops.zeros({B, S, d}, dt), dvhat_raw = ops.zeros({B, S, d}, dt);
  dual_ln_dproj.backward(ops, dkhat, sv.khat_raw, sv.khat_ln, dkhat_raw);
  dual_ln_dproj.backward(ops, dvhat, sv.vhat_raw, sv.vhat_ln, dvhat_raw);
  Tensor dkeys_cache = ops.empty({B, mem_slots, d}, dt), dvalues_cache = ops.empty({B, mem_slots, d}, dt);
  ops.copy_rows(dkeys_cache, 0, dkhat_raw, 0, mem_slots);
  ops.copy_rows(dvalues_cache, 0, dvhat_raw, 0, mem_slots);
  Tensor dkeys_chunks = ops.empty({B, block_slots, d}, dt), dvalues_chunks = ops.empty({B, block_slots, d}, dt);
  ops.copy_rows(dkeys_chunks, 0, dkhat_raw, mem_slots, block_slots);
  ops.copy_rows(dvalues_chunks, 0, dvhat_raw, mem_slots, block_slots);

  // Cache path: projection, compression, weights. The cache itself is a constant (truncated
  // BPTT); its gradient is only wanted for the pre-LN norm1 parameters upstream.
  Tensor dcompressed = ops.zeros({B, mem_slots, d}, dt);
  proj_key.backward(ops, dkeys_cache, sv.cache_compressed, dcompressed);
  proj_val.backward(ops, dvalues_cache, sv.cache_compressed, dcompressed);
  Tensor dcache_weights = ops.zeros({B, M, H * r}, dt);
  ops.compress_chunks_backward(dcache, dcache_weights, dcompressed, cache, sv.cache_weights, c, r,
                               H, 0);
  Tensor dscores = ops.zeros({B, M, H * r}, dt);
  ops.chunk_softmax_backward(dscores, dcache_weights, sv.cache_weights, c);
  dconv_1.backward(ops, dscores, cache, dcache);

  // Block path: compression of the projected keys/values, then the weights.
  Tensor dkeys_block = ops.zeros({B, T, d}, dt), dvalues_block = ops.zeros({B, T, d}, dt);
  Tensor dblock_weights = ops.zeros({B, T, H * r}, dt);
  ops.compress_chunks_backward(dkeys_block, dblock_weights, dkeys_chunks, sv.keys_block,
                               sv.block_weights, c, r, H, 0);
  ops.compress_chunks_backward(dvalues_block, dblock_weights, dvalues_chunks, sv.values_block,
                               sv.block_weights, c, r, H, 0);
  dscores = ops.zeros({B, T, H * r}, dt);
  ops.chunk_softmax_backward(dscores, dblock_weights, sv.block_weights, c);
  dconv_1.backward(ops, dscores, h, dh);

  // Window path: LN_win, then split the cache tail from the block rows.
  Tensor dkeys_raw = ops.zeros({B, w + T, d}, dt), dvalues_raw = ops.zeros({B, w + T, d}, dt);
  dual_ln_win.backward(ops, dkeys_win, sv.keys_raw, sv.keys_win_ln, dkeys_raw);
  dual_ln_win.backward(ops, dvalues_win, sv.values_raw, sv.values_win_ln, dvalues_raw);
  ops.add_rows(dkeys_block, 0, dkeys_raw, w, T);
  ops.add_rows(dvalues_block, 0, dvalues_raw, w, T);
  Tensor dkeys_tail = ops.empty({B, w, d}, dt), dvalues_tail = ops.empty({B, w, d}, dt);
  ops.copy_rows(dkeys_tail, 0, dkeys_raw, 0, w);
  ops.copy_rows(dvalues_tail, 0, dvalues_raw, 0, w);
  Tensor dtail = dcache.defined() ? ops.zeros({B, w, d}, dt) : Tensor();
  proj_key.backward(ops, dkeys_tail, sv.cache_tail, dtail);
  proj_val.backward(ops, dvalues_tail, sv.cache_tail, dtail);
  if (dcache.defined()) ops.add_rows(dcache, M - w, dtail, 0, w);

  // Projections of the block rows.
  proj_key.backward(ops, dkeys_block, h, dh);
  proj_val.backward(ops, dvalues_block, h, dh);
  ops.scale(dq, 1.0 / std::sqrt(static_cast<double>(cfg_.d_head())));
  proj_query.backward(ops, dq, h, dh);
}

}  // namespace tls
