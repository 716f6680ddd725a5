// Activation checkpointing in sequence pieces. Per layer, the forward keeps x, the cache, h2 and
// the attention's compressed slots; everything else exists for one piece of P tokens at a time:
//   forward:  slots (every piece's keys and values compressed), then per piece the attention
//             (its window reaching w rows back into the previous piece) and the feed-forward half;
//   backward: per piece the feed-forward half (recomputed, without fc2) and its backward, giving
//             dh2; then per piece, last first, the attention recomputed and back-propagated, the
//             slots' gradient accumulating; then the slots' gradient back to every piece's rows.
// Every row is computed exactly as by the whole-block layer, with the same dropout masks (keys
// from the global position); only the order of the sums over pieces (parameter gradients, the
// slots' gradients) differs.
#include <algorithm>

#include "layers/transformer_layer.h"
#include "kernels/error.h"

namespace tls {
namespace {

// Tokens per piece when the run does not choose: large enough for efficient GEMMs, small enough
// that a piece's activations are a few MiB.
constexpr int64_t kDefaultPieceTokens = 2048;

Tensor copy_of_rows(Ops& ops, const Tensor& x, int64_t row0, int64_t n) {
  Tensor out = ops.empty({x.dim(0), n, x.dim(2)}, x.dtype());
  ops.copy_rows(out, 0, x, row0, n);
  return out;
}

// The pass context of the piece at row t0 of a block of `tokens` rows: dropout keys count
// positions from the block's (or the whole sequence's) start.
PassContext piece_context(const PassContext& ctx, int64_t t0, int64_t tokens) {
  PassContext piece = ctx;
  if (piece.t_global == 0) {
    piece.t_global = tokens;
    piece.t_offset = 0;
  }
  piece.t_offset += t0;
  return piece;
}

}  // namespace

int64_t TransformerLayer::piece_tokens(int64_t tokens, const PassContext& ctx) const {
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

Tensor TransformerLayer::attention_input_rows(Ops& ops, const Tensor& x, int64_t t0,
                                              int64_t n) const {
  Tensor rows = copy_of_rows(ops, x, t0, n);
  if (!cfg_.pre_ln) return rows;
  Tensor normed;
  LayerNormSaved stats;
  norm1.forward(ops, rows, normed, stats);
  return normed;
}

void TransformerLayer::add_attention_input_gradient(Ops& ops, const Tensor& x, int64_t t0,
                                                    const Tensor& dh, Tensor& dx) {
  const int64_t n = dh.dim(1);
  if (!cfg_.pre_ln) {
    ops.add_rows(dx, t0, dh, 0, n);
    return;
  }
  const Tensor rows = copy_of_rows(ops, x, t0, n);
  Tensor normed;
  LayerNormSaved stats;
  norm1.forward(ops, rows, normed, stats);
  Tensor drows = ops.zeros(rows.shape(), rows.dtype());
  norm1.backward(ops, dh, rows, stats, drows);
  ops.add_rows(dx, t0, drows, 0, n);
}

void TransformerLayer::forward_keeping_inputs(Ops& ops, const Tensor& x, const Tensor& cache,
                                              const PositionTables& pos, Tensor& out,
                                              TransformerLayerSaved& sv,
                                              const PassContext& ctx) const {
  const int64_t B = x.dim(0), T = x.dim(1), M = cache.dim(1), d = x.dim(2);
  const int64_t piece = piece_tokens(T, ctx);
  const bool drop = ctx.training && ctx.dropout > 0;
  sv = TransformerLayerSaved();
  sv.x = x;
  sv.cache = cache;
  Tensor attention_cache = cache;
  if (cfg_.pre_ln) {
    LayerNormSaved stats;
    attention_cache = Tensor();
    norm1.forward(ops, cache, attention_cache, stats);
  }
  auto rows = [&](int64_t t0, int64_t n) { return attention_input_rows(ops, x, t0, n); };
  attn.forward_slots(ops, rows, T, piece, attention_cache, pos, sv.slots);
  attention_cache = Tensor();

  sv.h2 = ops.empty({B, T, d}, x.dtype());
  out = ops.empty({B, T, d}, x.dtype());
  for (int64_t t0 = 0; t0 < T; t0 += piece) {
    const int64_t n = std::min(piece, T - t0), first = attn.first_row(t0);
    const PassContext piece_ctx = piece_context(ctx, t0, T);
    const Tensor h_ext = rows(first, t0 + n - first);
    Tensor a;
    attn.forward_piece(ops, h_ext, t0, T, M, sv.slots, a);
    if (drop) ops.dropout_apply(a, ctx.dropout, piece_ctx.key(dropout_id(0), n));
    TransformerLayerSaved half;
    if (cfg_.pre_ln) {  // h2 = h1 + drop(a)
      half.h2 = copy_of_rows(ops, h_ext, t0 - first, n);
      ops.axpy(1.0, a, half.h2);
    } else {  // h2 = LN1(x + drop(a))
      Tensor h1 = copy_of_rows(ops, x, t0, n);
      ops.axpy(1.0, a, h1);
      norm1.forward(ops, h1, half.h2, half.ln1);
    }
    ops.copy_rows(sv.h2, t0, half.h2, 0, n);
    Tensor out_rows;
    ffn_half(ops, out_rows, half, piece_ctx);
    ops.copy_rows(out, t0, out_rows, 0, n);
  }
}

void TransformerLayer::backward_recomputing(Ops& ops, const Tensor& dout, const PositionTables& pos,
                                            const TransformerLayerSaved& inputs, Tensor& dx,
                                            const PassContext& ctx) {
  const Tensor& x = inputs.x;
  const int64_t B = x.dim(0), T = x.dim(1), M = inputs.cache.dim(1), d = x.dim(2);
  const int64_t piece = piece_tokens(T, ctx);
  const bool drop = ctx.training && ctx.dropout > 0;

  // Feed-forward half: dout -> dh2, piece by piece.
  Tensor dh2 = ops.empty({B, T, d}, x.dtype());
  for (int64_t t0 = 0; t0 < T; t0 += piece) {
    const int64_t n = std::min(piece, T - t0);
    const PassContext piece_ctx = piece_context(ctx, t0, T);
    TransformerLayerSaved half;
    half.h2 = copy_of_rows(ops, inputs.h2, t0, n);
    if (cfg_.pre_ln) {  // the backward needs LN2(h2) and fc1's activations, not fc2's output
      norm2.forward(ops, half.h2, half.h3, half.ln2);
      ff.forward_activations(ops, half.h3, half.ffn, piece_ctx, dropout_id(1));
    } else {
      Tensor out_rows;
      ffn_half(ops, out_rows, half, piece_ctx);
    }
    const Tensor dh2_rows = ffn_half_backward(ops, copy_of_rows(ops, dout, t0, n), half, piece_ctx);
    ops.copy_rows(dh2, t0, dh2_rows, 0, n);
  }

  // Attention half, last piece first: each piece recomputes its attention and sends its
  // gradient back into dx (its window rows before it included); the slots' gradient waits.
  Tensor attention_cache = inputs.cache;
  LayerNormSaved cache_stats;
  if (cfg_.pre_ln) {
    attention_cache = Tensor();
    norm1.forward(ops, inputs.cache, attention_cache, cache_stats);
  }
  auto rows = [&](int64_t t0, int64_t n) { return attention_input_rows(ops, x, t0, n); };
  LSAttentionSlotGrads grads = attn.zero_slot_grads(ops, inputs.slots);
  const int64_t last = (T - 1) / piece * piece;
  for (int64_t t0 = last; t0 >= 0; t0 -= piece) {
    const int64_t n = std::min(piece, T - t0), first = attn.first_row(t0);
    const PassContext piece_ctx = piece_context(ctx, t0, T);
    const Tensor h_ext = rows(first, t0 + n - first);
    Tensor dh_ext = ops.zeros(h_ext.shape(), x.dtype());
    OutputGradient output_gradient;
    if (cfg_.pre_ln) {
      // h2 = h1 + drop(a): a's gradient is dh2 through the dropout mask.
      output_gradient = [&](const Tensor&) {
        Tensor da = copy_of_rows(ops, dh2, t0, n);
        if (drop) ops.dropout_apply(da, ctx.dropout, piece_ctx.key(dropout_id(0), n));
        return da;
      };
    } else {
      // h2 = LN1(h1), h1 = x + drop(a): back through LN1 (its input recomputed from a), the
      // residual to dx, and through the dropout mask to a.
      output_gradient = [&](const Tensor& a) {
        Tensor h1 = copy_of_rows(ops, x, t0, n), dropped = ops.empty(a.shape(), a.dtype());
        ops.copy(dropped, a);
        if (drop) ops.dropout_apply(dropped, ctx.dropout, piece_ctx.key(dropout_id(0), n));
        ops.axpy(1.0, dropped, h1);
        Tensor h2;
        LayerNormSaved stats;
        norm1.forward(ops, h1, h2, stats);
        Tensor dh1 = ops.zeros(h1.shape(), h1.dtype());
        norm1.backward(ops, copy_of_rows(ops, dh2, t0, n), h1, stats, dh1);
        ops.add_rows(dx, t0, dh1, 0, n);
        if (drop) ops.dropout_apply(dh1, ctx.dropout, piece_ctx.key(dropout_id(0), n));
        return dh1;
      };
    }
    attn.backward_piece(ops, h_ext, t0, T, M, inputs.slots, !cfg_.pre_ln, output_gradient, grads,
                        dh_ext);
    if (cfg_.pre_ln) ops.add_rows(dh_ext, t0 - first, dh2, t0, n);  // the residual h1 -> h2
    add_attention_input_gradient(ops, x, first, dh_ext, dx);
  }
  dh2 = Tensor();

  // The slots' gradient back to the rows and the cache (pre-LN: norm1's parameters see the
  // cache rows too).
  Tensor dcache = cfg_.pre_ln ? ops.zeros(inputs.cache.shape(), x.dtype()) : Tensor();
  attn.backward_slots(
      ops, rows, T, piece, attention_cache, pos, inputs.slots, grads,
      [&](int64_t t0, const Tensor& dh) { add_attention_input_gradient(ops, x, t0, dh, dx); },
      dcache);
  if (cfg_.pre_ln) {
    Tensor no_grad;
    norm1.backward(ops, dcache, inputs.cache, cache_stats, no_grad);
  }
}

}  // namespace tls
