// Long-short attention (the reference's ChunkedLSAttention), docs/DESIGN.md sections 1 and 1.1.
//
// For a block h [B, T, d] and its cache C [B, M, d] (both already normed in the pre-LN model):
//   q  = (h Wq^T) / sqrt(d_h)
//   window:  Kw, Vw = LN_win([C_{M-w..M-1} ; h] Wk^T / Wv^T), R = r_net(PE(delta))
//   compressed: p = chunk-softmax(x Wd^T + bd) over the c rows of each chunk;
//     cache chunks compress-then-project: K^ = LN_dproj((sum p C) Wk^T)
//     block chunks project-then-compress: K^ = LN_dproj(sum p (h Wk^T))
//     P = r_net_chunk(PE(id)), id = (g_q - g) r - 1 - k clamped by cpos_clamp_len
//   one softmax over [compressed ; window] scores, out = proj_out(sum p V)
// Each part runs as its own kernel (kernels/ops.h) and the parts are merged by their
// log-sum-exp, so no T x T matrix or dense mask ever exists.
//
// Parallel (docs/DESIGN.md section 3): heads are split over tp (q/k/v, r_net, r_net_chunk, the
// r_*_bias and both DualLNs hold this rank's heads; proj_out is row-parallel; dconv_1 is
// replicated so the cache path can compress with every head's weights before projecting). The
// block and the cache are cut into sp slices: the window's halo comes from the previous rank
// (halo_exchange) and the compressed vectors of every slice are all-gathered (gather_chunks_forward).
#pragma once

#include <functional>

#include "layers/layernorm.h"
#include "layers/linear.h"
#include "layers/model_config.h"

namespace tls {

// Positional tables shared by every layer of one pass (computed once by the model).
struct PositionTables {
  Tensor window;  // [w, d]: PE(min(delta, clamp_len)) for delta = 0..w-1 (dropout applied)
  Tensor chunk;   // [n_pos, d]: PE(min(id, cpos_clamp_len)) for id = 0..n_pos-1
};

struct LSAttentionSaved {
  Tensor q, keys_block, values_block;  // [B, T, dl]: scaled queries, h Wk^T, h Wv^T
  Tensor cache_tail;                   // [B, w, d]: C_{M-w..M-1} (last sp rank only)
  Tensor keys_raw, values_raw;         // [B, w + T, dl] (halo ; block) before LN_win
  Tensor keys_win, values_win;         // after LN_win
  LayerNormSaved keys_win_ln, values_win_ln;
  Tensor cache_weights, block_weights;  // chunk-softmax weights [B, M | T, H r]
  Tensor cache_compressed;              // [B, M/c r, d]: sum p C (all heads merged)
  Tensor khat_raw, vhat_raw;            // [B, local slots, dl] before LN_dproj
  Tensor khat_local, vhat_local;        // after LN_dproj
  LayerNormSaved khat_ln, vhat_ln;
  Tensor khat, vhat;             // [B, S, dl]: every slice's slots (gathered)
  Tensor rel_window, rel_chunk;  // r_net(PE window), r_net_chunk(PE chunk)
  Tensor attn, lse;              // merged output [B, T, dl] and lse [B, H, T]
};

// Recomputation in sequence pieces (activation checkpointing): what every
// piece of a block needs, kept for the whole block. Its size grows with T/c (the compressed
// slots) and w, not with T x d.
struct LSAttentionSlots {
  Tensor cache_weights, block_weights;  // chunk-softmax weights [B, M | T, H r]
  Tensor cache_compressed;              // [B, M/c r, d]
  Tensor khat_raw, vhat_raw;            // [B, local slots, dl] before LN_dproj
  LayerNormSaved khat_ln, vhat_ln;
  Tensor khat, vhat;              // [B, S, dl]: every slice's slots (gathered)
  Tensor rel_window, rel_chunk;   // r_net(PE window), r_net_chunk(PE chunk)
  Tensor cache_tail;              // [B, w, d]: C_{M-w..M-1} (last sp rank only)
  Tensor halo_keys, halo_values;  // [B, w, dl]: raw keys and values of the w rows before
                                  // the slice (the previous slice's tail or the cache's)
};

// Gradients the pieces accumulate for the slots, consumed by backward_slots.
struct LSAttentionSlotGrads {
  Tensor dkhat, dvhat, drel_chunk, drel_window;
  Tensor dhalo_keys, dhalo_values;  // set by the piece that starts at row 0
};

// The rows [t0, t0 + n) of a piece's input h, or its gradient's destination.
using RowsOf = std::function<Tensor(int64_t t0, int64_t n)>;
using RowsGradient = std::function<void(int64_t t0, const Tensor& dh_rows)>;
// Given a piece's attention output (undefined unless asked for), the gradient reaching it.
using OutputGradient = std::function<Tensor(const Tensor& out)>;

// [cache slots ; block slots] of one slice: [B, M/c r + T/c r, dl].
Tensor slots_of(Ops& ops, const Tensor& cache_part, const Tensor& block_part);

class LSAttention {
 public:
  void init(Ops& ops, const std::string& name, const ModelConfig& cfg, DType dtype,
            const Topology& topo, int layer_index);
  // h: [B, T_local, d], cache: [B, M_local, d] -> out: [B, T_local, d] (before the attention
  // dropout; summed over tp).
  void forward(Ops& ops, const Tensor& h, const Tensor& cache, const PositionTables& pos,
               Tensor& out, LSAttentionSaved& saved) const;
  // dh accumulates; dcache (may be undefined) accumulates the gradient reaching the cache rows,
  // which the pre-LN layer needs for norm1's parameters. Both come out summed over tp.
  void backward(Ops& ops, const Tensor& dout, const Tensor& h, const Tensor& cache,
                const PositionTables& pos, const LSAttentionSaved& saved, Tensor& dh,
                Tensor& dcache);

  // ---- the same computation in sequence pieces (activation checkpointing) -------------------
  // A piece [t0, t0 + n) is chunk-aligned and, unless t0 = 0, at least w rows from the start,
  // so its window reaches back only into the rows before it: its input h_ext holds the rows
  // [first_row(t0), t0 + n).
  int64_t first_row(int64_t t0) const { return t0 > 0 ? t0 - cfg_.window_len : 0; }
  // Every piece's keys and values compressed, LN_dproj, the gather over sp, the halo exchange and
  // the positional tables: `rows` yields the block's input rows piece by piece.
  void forward_slots(Ops& ops, const RowsOf& rows, int64_t tokens, int64_t piece,
                     const Tensor& cache, const PositionTables& pos, LSAttentionSlots& slots) const;
  // out [B, n, d] for the piece's n = rows of h_ext past first_row(t0) (summed over tp).
  void forward_piece(Ops& ops, const Tensor& h_ext, int64_t t0, int64_t tokens, int64_t mem,
                     const LSAttentionSlots& slots, Tensor& out) const;
  // Recomputes the piece, takes its output's gradient from output_gradient (given the output
  // only when output_needed), and back-propagates it: dh_ext accumulates (complete over tp),
  // the slots' gradients accumulate in grads, and the parameters' gradients in place.
  void backward_piece(Ops& ops, const Tensor& h_ext, int64_t t0, int64_t tokens, int64_t mem,
                      const LSAttentionSlots& slots, bool output_needed,
                      const OutputGradient& output_gradient, LSAttentionSlotGrads& grads,
                      Tensor& dh_ext);
  LSAttentionSlotGrads zero_slot_grads(Ops& ops, const LSAttentionSlots& slots) const;
  // After every piece: the slots' gradients back to the block rows (handed to `gradient` piece
  // by piece), to the cache (dcache accumulates; may be undefined) and to the parameters.
  void backward_slots(Ops& ops, const RowsOf& rows, int64_t tokens, int64_t piece,
                      const Tensor& cache, const PositionTables& pos, const LSAttentionSlots& slots,
                      LSAttentionSlotGrads& grads, const RowsGradient& gradient, Tensor& dcache);

  Linear proj_query, proj_key, proj_val, proj_out, r_net, r_net_chunk, dconv_1;
  Parameter r_w_bias, r_r_bias;  // [dl] locally, [1,H,1,1,d_h] / [1,H,1,d_h] in the checkpoint
  LayerNorm dual_ln_win, dual_ln_dproj;

 private:
  // One call's geometry: local batch, block slice and cache slice lengths.
  AttentionShape shape(int64_t batch, int64_t tokens, int64_t mem) const;
  // Cache chunks: compress the raw rows with every head's chunk-softmax weights, merge heads,
  // then project to keys and values (forward), and the backward of that (dcache accumulates and
  // may be undefined).
  void compress_cache(Ops& ops, const Tensor& cache, Tensor& weights, Tensor& compressed,
                      Tensor& keys, Tensor& values) const;
  void compress_cache_backward(Ops& ops, const Tensor& dkeys, const Tensor& dvalues,
                               const Tensor& cache, const Tensor& weights, const Tensor& compressed,
                               Tensor& dcache);
  // A piece's geometry (checked): its queries are h_ext's rows past first_row(t0).
  AttentionShape piece_shape(const Tensor& h_ext, int64_t t0, int64_t tokens, int64_t mem) const;
  bool holds_cache_tail() const { return topo_->sp_rank == topo_->layout.sp - 1; }

  ModelConfig cfg_;
  const Topology* topo_ = nullptr;
  int64_t n_head_local_ = 0, head_offset_ = 0, d_local_ = 0;
  int tag_ = 0;  // message tag base of this layer's halo exchanges
};

}  // namespace tls
