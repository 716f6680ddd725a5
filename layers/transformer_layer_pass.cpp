// The layer's pass over the block's pieces, for both kinds of pass (docs/DESIGN.md section 2,
// "Activation checkpointing"):
//   - without activation checkpointing the block is one piece and every activation is kept;
//   - with it, the forward keeps x, the cache, h2 and the attention's compressed slots, and
//     everything else exists for one piece of P tokens at a time:
//       forward:  slots (every piece's keys and values compressed), then per piece the attention
//                 (its window reaching w rows back into the previous piece) and the feed-forward
//                 half;
//       backward: per piece the feed-forward half (recomputed, without fc2) and its backward,
//                 giving dh2; then per piece, last first, the attention recomputed and
//                 back-propagated, the slots' gradient accumulating; then the slots' gradient
//                 back to every piece's rows.
// Every row is computed with the same arithmetic and dropout masks (keys from the global
// position) either way; only the order of the sums over pieces (parameter gradients, the slots'
// gradients, a row's gradient from its own piece and from the next one's window) differs.
#include <algorithm>

#include "kernels/error.h"
#include "layers/transformer_layer.h"

namespace tls {
namespace {

// Tokens per piece when the run does not choose: large enough for efficient GEMMs, small enough
// that a piece's activations are a few MiB.
constexpr int64_t kDefaultPieceTokens = 2048;

// Rows [row0, row0 + n) of x: x itself when that is all of it.
Tensor rows_of(Ops& ops, const Tensor& x, int64_t row0, int64_t n) {
  return row0 == 0 && n == x.dim(1) ? x : copy_of_rows(ops, x, row0, n);
}

// The pass context of a piece: dropout keys count positions from the block's (or the whole
// sequence's) start, run by run.
PassContext piece_context(const PassContext& ctx, const Piece& p, int64_t tokens) {
  return ctx.rows(p.t0, p.n, tokens);
}

}  // namespace

int64_t TransformerLayer::piece_tokens(int64_t tokens, const PassContext& ctx) const {
  if (!ctx.activation_checkpointing) return tokens;
  const int64_t c = cfg_.chunk_size, w = cfg_.window_len;
  int64_t piece = ctx.recompute_piece;
  if (piece == 0) {
    piece = std::max(w, kDefaultPieceTokens);
    piece = (piece + c - 1) / c * c;
  } else if (piece < w || piece % c != 0) {
    throw Error("recomputation piece of " + std::to_string(piece) +
                " tokens: it must be a multiple of the chunk size " + std::to_string(c) +
                " and at least the window " + std::to_string(w));
  }
  return std::min(piece, tokens);
}

Tensor TransformerLayer::attention_cache(Ops& ops, const Tensor& cache,
                                         LayerNormSaved& stats) const {
  if (!cfg_.pre_ln) return cache;
  Tensor normed;
  norm1.forward(ops, cache, normed, stats);
  return normed;
}

Tensor TransformerLayer::attention_input_rows(Ops& ops, const TransformerLayerSaved& sv, int64_t t0,
                                              int64_t n) const {
  if (!cfg_.pre_ln) return rows_of(ops, sv.x, t0, n);
  if (sv.keep) return rows_of(ops, sv.x_normed, t0, n);
  Tensor normed;
  LayerNormSaved stats;
  norm1.forward(ops, rows_of(ops, sv.x, t0, n), normed, stats);
  return normed;
}

void TransformerLayer::add_attention_input_gradient(Ops& ops, const TransformerLayerSaved& sv,
                                                    int64_t t0, const Tensor& dh, Tensor& dx) {
  const int64_t n = dh.dim(1);
  if (!cfg_.pre_ln) {
    ops.add_rows(dx, t0, dh, 0, n);
  } else if (sv.keep) {  // the whole block, with LN1's kept statistics
    norm1.backward(ops, dh, sv.x, sv.ln1_x, dx);
  } else {
    const Tensor rows = rows_of(ops, sv.x, t0, n);
    Tensor normed;
    LayerNormSaved stats;
    norm1.forward(ops, rows, normed, stats);
    Tensor drows = ops.zeros(rows.shape(), rows.dtype());
    norm1.backward(ops, dh, rows, stats, drows);
    ops.add_rows(dx, t0, drows, 0, n);
  }
}

void TransformerLayer::forward(Ops& ops, const Tensor& x, const Tensor& cache,
                               const PositionTables& pos, Tensor& out, TransformerLayerSaved& sv,
                               const PassContext& ctx) const {
  const int64_t B = x.dim(0), T = x.dim(1), M = cache.dim(1), d = x.dim(2);
  sv = TransformerLayerSaved();
  sv.keep = !ctx.activation_checkpointing;
  sv.x = x;
  sv.cache = cache;
  Tensor attn_cache = attention_cache(ops, cache, sv.ln1_cache);
  if (sv.keep && cfg_.pre_ln) {
    sv.cache_normed = attn_cache;
    norm1.forward(ops, x, sv.x_normed, sv.ln1_x);
  }
  auto rows = [&](int64_t t0, int64_t n) { return attention_input_rows(ops, sv, t0, n); };
  attn.forward_slots(ops, rows, T, attn.pieces(T, piece_tokens(T, ctx), sv.keep), sv.keep,
                     attn_cache, pos, sv.attn);
  attn_cache = Tensor();

  if (!sv.keep) {
    sv.h2 = ops.empty({B, T, d}, x.dtype());
    out = ops.empty({B, T, d}, x.dtype());
  }
  for (const Piece& p : sv.attn.pieces) {
    const int64_t first = attn.first_row(p.t0, T);
    const PassContext piece_ctx = piece_context(ctx, p, T);
    const Tensor h_ext = rows(first, p.t0 + p.n - first);
    Tensor a;
    attn.forward_piece(ops, h_ext, p, T, M, sv.attn, a);
    LayerPieceSaved recomputed;
    LayerPieceSaved& half = sv.keep ? sv.piece : recomputed;
    const Tensor residual =
        cfg_.pre_ln ? rows_of(ops, h_ext, p.t0 - first, p.n) : rows_of(ops, x, p.t0, p.n);
    attention_residual(ops, residual, a, half, piece_ctx);
    Tensor out_rows;
    ffn_half(ops, out_rows, half, piece_ctx);
    if (sv.keep) {
      sv.h2 = half.h2;
      out = out_rows;
    } else {
      ops.copy_rows(sv.h2, p.t0, half.h2, 0, p.n);
      ops.copy_rows(out, p.t0, out_rows, 0, p.n);
    }
  }
}

void TransformerLayer::backward(Ops& ops, const Tensor& dout, const PositionTables& pos,
                                const TransformerLayerSaved& sv, Tensor& dx,
                                const PassContext& ctx) {
  const Tensor& x = sv.x;
  const int64_t B = x.dim(0), T = x.dim(1), M = sv.cache.dim(1), d = x.dim(2);
  const bool drop = ctx.training && ctx.dropout > 0;
  const std::vector<Piece> pieces = sv.attn.pieces;

  // Feed-forward half: dout -> dh2, piece by piece.
  Tensor dh2 = sv.keep ? Tensor() : ops.empty({B, T, d}, x.dtype());
  for (const Piece& p : pieces) {
    const PassContext piece_ctx = piece_context(ctx, p, T);
    LayerPieceSaved recomputed;
    if (!sv.keep) {
      recomputed.h2 = rows_of(ops, sv.h2, p.t0, p.n);
      ffn_half_recompute(ops, recomputed, piece_ctx);
    }
    const Tensor dh2_rows = ffn_half_backward(ops, rows_of(ops, dout, p.t0, p.n),
                                              sv.keep ? sv.piece : recomputed, piece_ctx);
    if (sv.keep)
      dh2 = dh2_rows;
    else
      ops.copy_rows(dh2, p.t0, dh2_rows, 0, p.n);
  }

  // Attention half, last piece first: each piece's attention is recomputed (unless kept) and
  // back-propagated; its input rows' gradient goes to dx at once (with kept activations after
  // the slots' share joined it); the slots' gradient waits for every piece.
  LayerNormSaved cache_stats = sv.ln1_cache;
  const Tensor attn_cache =
      sv.keep && cfg_.pre_ln ? sv.cache_normed : attention_cache(ops, sv.cache, cache_stats);
  auto rows = [&](int64_t t0, int64_t n) { return attention_input_rows(ops, sv, t0, n); };
  LSAttentionSlotGrads grads = attn.zero_slot_grads(ops, sv.attn);
  Tensor kept_dh;  // with kept activations: the block's input gradient, completed by the slots
  for (auto it = pieces.rbegin(); it != pieces.rend(); ++it) {
    const Piece& p = *it;
    const int64_t first = attn.first_row(p.t0, T);
    const PassContext piece_ctx = piece_context(ctx, p, T);
    const Tensor h_ext = rows(first, p.t0 + p.n - first);
    Tensor dh_ext;
    OutputGradient output_gradient;
    if (cfg_.pre_ln) {
      // h2 = h1 + drop(a): h1's gradient starts from dh2 (the residual), a's is dh2 through the
      // dropout mask.
      if (sv.keep) {
        dh_ext = ops.empty(dh2.shape(), x.dtype());
        ops.copy(dh_ext, dh2);
      } else {
        dh_ext = ops.zeros(h_ext.shape(), x.dtype());
        ops.add_rows(dh_ext, p.t0 - first, dh2, p.t0, p.n);
      }
      output_gradient = [&](const Tensor&) {
        Tensor da = ops.empty({B, p.n, d}, x.dtype());
        ops.copy_rows(da, 0, dh2, p.t0, p.n);
        if (drop) piece_ctx.drop(ops, da, ctx.dropout, dropout_id(0), p.n);
        return da;
      };
    } else {
      // h2 = LN1(h1), h1 = x + drop(a): back through LN1 (its input kept, or recomputed from
      // a), the residual to dx, and through the dropout mask to a. With kept activations the
      // attention's share is summed into dx itself, after the residual.
      dh_ext = sv.keep ? dx : ops.zeros(h_ext.shape(), x.dtype());
      output_gradient = [&](const Tensor& a) {
        LayerPieceSaved recomputed;
        if (!sv.keep) {
          Tensor dropped = ops.empty(a.shape(), a.dtype());
          ops.copy(dropped, a);
          attention_residual(ops, rows_of(ops, x, p.t0, p.n), dropped, recomputed, piece_ctx);
        }
        const LayerPieceSaved& half = sv.keep ? sv.piece : recomputed;
        Tensor dh1 = ops.zeros(half.h1.shape(), x.dtype());
        norm1.backward(ops, rows_of(ops, dh2, p.t0, p.n), half.h1, half.ln1, dh1);
        ops.add_rows(dx, p.t0, dh1, 0, p.n);
        if (drop) piece_ctx.drop(ops, dh1, ctx.dropout, dropout_id(0), p.n);
        return dh1;
      };
    }
    attn.backward_piece(ops, h_ext, p, T, M, sv.attn, !sv.keep && !cfg_.pre_ln, output_gradient,
                        grads, dh_ext);
    if (sv.keep)
      kept_dh = dh_ext;
    else
      add_attention_input_gradient(ops, sv, first, dh_ext, dx);
  }
  dh2 = Tensor();

  // The slots' gradient back to the rows and the cache (pre-LN: norm1's parameters see the
  // cache rows too).
  Tensor dcache = cfg_.pre_ln ? ops.zeros(sv.cache.shape(), x.dtype()) : Tensor();
  attn.backward_slots(
      ops, rows, T, attn_cache, pos, sv.attn, grads,
      [&](int64_t t0, const Tensor& dh) { add_attention_input_gradient(ops, sv, t0, dh, dx); },
      dcache);
  if (cfg_.pre_ln) {
    if (sv.keep) add_attention_input_gradient(ops, sv, 0, kept_dh, dx);
    Tensor no_grad;
    norm1.backward(ops, dcache, sv.cache, cache_stats, no_grad);
  }
}

}  // namespace tls
