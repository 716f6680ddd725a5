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
// One pass serves the whole block and activation checkpointing alike: the block is cut into
// pieces (one piece with its activations kept, or sequence pieces recomputed in the backward).
// Three things cross pieces and are kept for the block because they are small: the compressed
// slots (forward_slots; their gradient accumulates over the pieces and goes back in
// backward_slots), the window's halo (the slice's first piece gets it from the halo exchange,
// later pieces look w rows back into the rows before them) and the parameters' gradients. The
// per-piece steps are in ls_attention_slots.cpp.
//
// Parallel (docs/DESIGN.md section 3): heads are split over tp (q/k/v, r_net, r_net_chunk, the
// r_*_bias and both DualLNs hold this rank's heads; proj_out is row-parallel; dconv_1 is
// replicated so the cache path can compress with every head's weights before projecting). The
// block and the cache are cut into sp slices: the window's halo comes from the previous rank
// (halo_exchange), and each rank keeps its own compressed slots: the queries meet every
// rank's slots as they travel round the sp ring (chunk_attention_ring.h).
// forward_slots starts the halo exchange and the first piece waits for it before its window
// part; each piece's compressed part runs the ring (each hop travelling while the group before
// it is attended to). In the backward the piece at row 0 starts the halo's return, and
// backward_slots waits for it.
#pragma once

#include <functional>
#include <vector>

#include "layers/chunk_attention_ring.h"
#include "layers/layernorm.h"
#include "layers/linear.h"
#include "layers/model_config.h"
#include "parallel/halo_exchange.h"

namespace tls {

// Positional tables shared by every layer of one pass (computed once by the model).
struct PositionTables {
  Tensor window;  // [w, d]: PE(min(delta, clamp_len)) for delta = 0..w-1 (dropout applied)
  // Ids of the compressed part's positional table P[id] = r_net_chunk(PE(id)), id < n_pos:
  // (T + M) / c r, or cpos_clamp_len + 1 when that is fewer (a larger id reads row n_pos - 1).
  // Its rows are made per kernel call (chunk_attention_ring.h), never as a whole table.
  int64_t chunk_ids = 0;
};

// Rows [t0, t0 + n) of the block. A piece is chunk-aligned and starts at row 0 or at least w
// rows in, so its window reaches back only into the rows before it.
struct Piece {
  int64_t t0 = 0, n = 0;
};
// A block of `tokens` rows in pieces of `piece` rows (the last one may be shorter).
std::vector<Piece> pieces_of(int64_t tokens, int64_t piece);

// One piece's attention activations: kept for the backward when the pass keeps them, else
// recomputed there.
struct PieceActivations {
  Tensor h;                     // the piece's own rows of h_ext (h_ext itself without halo)
  Tensor q;                     // [B, n, dl], scaled
  Tensor keys, values;          // [B, rows of h_ext, dl]: h_ext Wk^T, h_ext Wv^T
  Tensor keys_raw, values_raw;  // [B, w + n, dl]: (halo or earlier rows ; piece) before LN_win
  Tensor keys_win, values_win;  // after LN_win
  LayerNormSaved keys_win_ln, values_win_ln;
  Tensor attn, lse;  // merged output [B, n, dl] and lse [B, H_l, n]
};

// What every piece of a block needs, kept for the whole block. Its size grows with T/c (the
// compressed slots) and w, not with T x d.
struct LSAttentionSlots {
  Tensor cache_weights, block_weights;  // chunk-softmax weights [B, M | T, H r]
  Tensor cache_compressed;              // [B, M/c r, d]: sum p C (all heads merged)
  Tensor khat_raw, vhat_raw;            // [B, local slots, dl] before LN_dproj
  LayerNormSaved khat_ln, vhat_ln;
  Tensor khat, vhat;              // [B, local slots, dl]: this slice's slots after LN_dproj
  Tensor rel_window;              // r_net(PE window)
  int64_t chunk_ids = 0;          // PositionTables::chunk_ids
  Tensor cache_tail;              // [B, w, d]: C_{M-w..M-1} (last sp rank only)
  Tensor halo_keys, halo_values;  // [B, w, dl]: raw keys and values of the w rows before
                                  // the slice (the previous slice's tail or the cache's)
  // The halo exchange forward_slots starts; the first piece waits for it.
  bool in_flight = false;
  HaloExchange halo;
};

struct LSAttentionSaved {
  bool keep = false;  // one piece, its activations kept (no recomputation)
  std::vector<Piece> pieces;
  LSAttentionSlots slots;
  PieceActivations kept;  // keep: the piece's activations
};

// The gradients the pieces accumulate for the slots, consumed by backward_slots.
struct LSAttentionSlotGrads {
  Tensor dkhat, dvhat;  // this slice's slots, summed over every rank's queries
  Tensor drel_window;
  // Set by the piece at row 0, which also starts the halo exchange back.
  Tensor dhalo_keys, dhalo_values, dtail_keys, dtail_values;
  HaloExchange halo;
  // With kept activations the piece's key, value and query gradients and its input gradient
  // wait for the slots' share, so that each row's gradient is one sum.
  Tensor dkeys, dvalues, dq, dinput;
};

// The rows [t0, t0 + n) of the attention's input h, or its gradient's destination.
using RowsOf = std::function<Tensor(int64_t t0, int64_t n)>;
using RowsGradient = std::function<void(int64_t t0, const Tensor& dh_rows)>;
// Given a piece's attention output (undefined unless asked for), the gradient reaching it.
using OutputGradient = std::function<Tensor(const Tensor& out)>;

// A copy of rows [row0, row0 + n) of x [B, rows, cols].
Tensor copy_of_rows(Ops& ops, const Tensor& x, int64_t row0, int64_t n);
// [cache slots ; block slots] of one slice: [B, M/c r + T/c r, dl].
Tensor slots_of(Ops& ops, const Tensor& cache_part, const Tensor& block_part);

class LSAttention {
 public:
  // Declares the attention's parameters in `params`.
  void init(Ops& ops, ParameterList& params, const std::string& name, const ModelConfig& cfg,
            DType dtype, const Topology& topo, int layer_index);

  // ---- the whole block as one piece with its activations kept ----------------------------
  // h: [B, T_local, d], cache: [B, M_local, d] -> out: [B, T_local, d] (before the attention
  // dropout; summed over tp).
  void forward(Ops& ops, const Tensor& h, const Tensor& cache, const PositionTables& pos,
               Tensor& out, LSAttentionSaved& saved) const;
  // dh accumulates; dcache (may be undefined) accumulates the gradient reaching the cache rows,
  // which the pre-LN layer needs for norm1's parameters. Both come out summed over tp.
  void backward(Ops& ops, const Tensor& dout, const Tensor& h, const Tensor& cache,
                const PositionTables& pos, const LSAttentionSaved& saved, Tensor& dh,
                Tensor& dcache);

  // ---- the pass, piece by piece -------------------------------------------------------------
  // A piece's input h_ext holds the rows [first_row(t0), t0 + n).
  int64_t first_row(int64_t t0) const { return t0 > 0 ? t0 - cfg_.window_len : 0; }
  // Every piece's keys and values compressed, LN_dproj, the positional tables; starts the
  // gather over sp and the halo exchange. `rows` yields the block's input rows piece by piece.
  // keep: one piece covering the block, whose projections are kept.
  void forward_slots(Ops& ops, const RowsOf& rows, int64_t tokens, std::vector<Piece> pieces,
                     bool keep, const Tensor& cache, const PositionTables& pos,
                     LSAttentionSaved& saved) const;
  // out [B, n, d] for the piece (summed over tp). Pieces in order, the one at row 0 first.
  void forward_piece(Ops& ops, const Tensor& h_ext, const Piece& piece, int64_t tokens, int64_t mem,
                     LSAttentionSaved& saved, Tensor& out) const;
  // Recomputes the piece (unless kept), takes its output's gradient from output_gradient (given
  // the output only when output_needed), and back-propagates it: the slots' gradients
  // accumulate in grads and the parameters' gradients in place; dh_ext accumulates the
  // gradient of h_ext's rows (complete over tp) at once, or with kept activations in
  // backward_slots, together with the compression's share. Pieces last first.
  void backward_piece(Ops& ops, const Tensor& h_ext, const Piece& piece, int64_t tokens,
                      int64_t mem, const LSAttentionSaved& saved, bool output_needed,
                      const OutputGradient& output_gradient, LSAttentionSlotGrads& grads,
                      Tensor& dh_ext);
  LSAttentionSlotGrads zero_slot_grads(Ops& ops, const LSAttentionSaved& saved) const;
  // After every piece: the slots' gradients back to the block rows (handed to `gradient` piece
  // by piece; with kept activations added to the piece's dh_ext instead), to the cache (dcache
  // accumulates; may be undefined) and to the parameters.
  void backward_slots(Ops& ops, const RowsOf& rows, int64_t tokens, const Tensor& cache,
                      const PositionTables& pos, const LSAttentionSaved& saved,
                      LSAttentionSlotGrads& grads, const RowsGradient& gradient, Tensor& dcache);

  Linear proj_query, proj_key, proj_val, proj_out, r_net, r_net_chunk, dconv_1;
  Parameter r_w_bias, r_r_bias;  // [dl] locally, [1,H,1,1,d_h] / [1,H,1,d_h] in the checkpoint
  LayerNorm dual_ln_win, dual_ln_dproj;

 private:
  // ---- the steps (ls_attention_slots.cpp) ----
  // Rows' keys and values (column-parallel: this rank's heads).
  void project_keys_values(Ops& ops, const Tensor& h, Tensor& keys, Tensor& values) const;
  // Their gradients back to the rows, with the queries' for a piece's own rows (dq may be
  // undefined); dh accumulates the sum over tp.
  void project_back(Ops& ops, const Tensor& h_ext, const Tensor& h, const Tensor& dkeys,
                    const Tensor& dvalues, Tensor& dq, Tensor& dh);
  // Block rows [t0, t0 + n): their compression weights (into block_weights' rows) and their
  // chunks' keys and values (project then compress, this rank's heads), and the backward.
  void compress_block_rows(Ops& ops, const Tensor& h, const Tensor& keys, const Tensor& values,
                           int64_t t0, Tensor& block_weights, Tensor& keys_chunks,
                           Tensor& values_chunks) const;
  void compress_block_rows_backward(Ops& ops, const Tensor& h, const Tensor& keys,
                                    const Tensor& values, const Tensor& weights,
                                    const Tensor& dkeys_chunks, const Tensor& dvalues_chunks,
                                    Tensor& dkeys, Tensor& dvalues, Tensor& dh);
  // Cache chunks: compress the raw rows with every head's chunk-softmax weights, merge heads,
  // then project to keys and values (forward), and the backward of that (dcache accumulates and
  // may be undefined).
  void compress_cache(Ops& ops, const Tensor& cache, Tensor& weights, Tensor& compressed,
                      Tensor& keys, Tensor& values) const;
  void compress_cache_backward(Ops& ops, const Tensor& dkeys, const Tensor& dvalues,
                               const Tensor& cache, const Tensor& weights, const Tensor& compressed,
                               Tensor& dcache);
  // The cache tail's projected keys and values (the slice 0's halo; last sp rank), and the
  // backward into dcache_partial's last w rows (may be undefined).
  void project_tail(Ops& ops, const Tensor& cache, LSAttentionSlots& slots, Tensor& keys,
                    Tensor& values) const;
  void project_tail_backward(Ops& ops, const LSAttentionSlots& slots, const Tensor& dkeys,
                             const Tensor& dvalues, Tensor& dcache_partial);
  // A piece's attention up to the merged output (before proj_out). Projects h_ext unless
  // a.keys holds it. in_flight: the slots whose exchanges forward_slots started (the forward's
  // first piece waits for them between its window and compressed parts), else null.
  void attend(Ops& ops, const Tensor& h_ext, int64_t t0, const LSAttentionSlots& slots,
              const AttentionShape& s, PieceActivations& a, LSAttentionSlots* in_flight) const;
  // The backward of attend and proj_out: dq, the gradients of h_ext's keys and values (the
  // window's share), the slots' gradients; the piece at row 0 starts the exchanges back.
  void attend_backward(Ops& ops, const Tensor& dout, const PieceActivations& a,
                       const LSAttentionSlots& slots, int64_t t0, const AttentionShape& s,
                       LSAttentionSlotGrads& grads, Tensor& dq, Tensor& dkeys, Tensor& dvalues);

  // The compressed part's positional rows P[id] = r_net_chunk(PE(id)), ids < n_pos, made per
  // kernel call; with `gradients` their backward accumulates into its parameters' gradients.
  ChunkPositions chunk_positions(int64_t n_pos, Linear* gradients) const;
  // One call's geometry: local batch, block slice and cache slice lengths.
  AttentionShape shape(int64_t batch, int64_t tokens, int64_t mem) const;
  // A piece's geometry (checked): its queries are h_ext's rows past first_row(t0).
  AttentionShape piece_shape(const Tensor& h_ext, int64_t t0, int64_t tokens, int64_t mem) const;
  bool holds_cache_tail() const { return topo_->sp_rank == topo_->layout.sp - 1; }
  // This slice's cache and block slot counts, from the compression weights' rows (M and T).
  SlotLayout slot_layout(const LSAttentionSlots& slots) const {
    const int64_t c = cfg_.chunk_size, r = cfg_.chunk_rank;
    return {slots.cache_weights.dim(1) / c * r, slots.block_weights.dim(1) / c * r};
  }

  ModelConfig cfg_;
  const Topology* topo_ = nullptr;
  int64_t n_head_local_ = 0, head_offset_ = 0, d_local_ = 0;
  int tag_ = 0;  // message tag base of this layer's halo exchanges
};

}  // namespace tls
