// One Transformer-LS layer (the reference's TransformerLSLayer), docs/DESIGN.md section 1.
//
// pre-LN (the paper's runs):           post-LN:
//   h1 = LN1(x); C' = LN1(C)              a  = drop(attn(x, C))
//   h2 = h1 + drop(attn(h1, C'))          h2 = LN1(x + a)
//   h3 = LN2(h2)                          out = LN2(h2 + ffn(h2))
//   out = h3 + ffn(h3)
// The pre-LN residuals start from the NORMED h (a quirk of the reference kept on purpose).
#pragma once

#include "layers/feed_forward.h"
#include "layers/ls_attention.h"
#include "layers/pass_context.h"

namespace tls {

// One piece's activations past the attention: kept for the block when the pass keeps its
// activations, recomputed piece by piece otherwise.
struct LayerPieceSaved {
  Tensor h1;           // post-LN: x + drop(a), LN1's input
  LayerNormSaved ln1;  // post-LN: LN1's statistics
  Tensor h2;           // the feed-forward half's input (both orders)
  Tensor h3;           // pre-LN: LN2(h2), the feed-forward's input
  LayerNormSaved ln2;
  Tensor post_ffn_in;  // post-LN: h2 + ffn(h2) (LN2's input)
  FeedForwardSaved ffn;
};

struct TransformerLayerSaved {
  bool keep = false;  // activations kept: the block as one piece, nothing recomputed
  Tensor x, cache;    // the layer's input and the cache it attended to
  Tensor h2;          // the feed-forward half's input, whole block
  // Kept only: pre-LN's LN1(x) and LN1(C) with their statistics, and the piece's activations.
  Tensor x_normed, cache_normed;
  LayerNormSaved ln1_x, ln1_cache;
  LayerPieceSaved piece;
  LSAttentionSaved attn;  // the compressed slots, and the attention's activations when kept
};

// The layer runs as two halves with one tensor between them, h2 (the feed-forward half's input
// in both orders): the attention half maps (x, C) to h2, the feed-forward half maps h2 to out.
// One pass (transformer_layer_pass.cpp) cuts the block into pieces: without activation
// checkpointing the block is one piece whose activations are kept; with it, the forward keeps
// only x, C, h2 and the attention's compressed slots, and the backward recomputes the
// feed-forward half from h2 and the attention half from x, piece by piece, so only one piece's
// activations exist at a time. The same math with the same dropout masks; only the order of
// the sums over pieces differs.
class TransformerLayer {
 public:
  TransformerLayer() = default;
  TransformerLayer(const TransformerLayer&) = delete;
  TransformerLayer& operator=(const TransformerLayer&) = delete;

  void init(Ops& ops, int64_t index, const ModelConfig& cfg, DType dtype, const Topology& topo);
  void forward(Ops& ops, const Tensor& x, const Tensor& cache, const PositionTables& pos,
               Tensor& out, TransformerLayerSaved& saved, const PassContext& ctx) const;
  // dx accumulates the gradient of the layer's input.
  void backward(Ops& ops, const Tensor& dout, const PositionTables& pos,
                const TransformerLayerSaved& saved, Tensor& dx, const PassContext& ctx);
  // Every parameter of the layer, as its modules declared them.
  std::vector<Parameter*> parameters() const { return params_.parameters(); }

  LSAttention attn;
  LayerNorm norm1, norm2;
  FeedForward ff;

 private:
  uint64_t dropout_id(int site) const { return 16 + static_cast<uint64_t>(index_) * 8 + site; }
  // ---- the halves' steps on one piece (transformer_layer.cpp) ----
  // The attention's output a of the piece's rows -> h2 (and post-LN's h1, ln1).
  void attention_residual(Ops& ops, const Tensor& residual, Tensor& a, LayerPieceSaved& sv,
                          const PassContext& ctx) const;
  // h2 -> out, filling the feed-forward half's saved tensors.
  void ffn_half(Ops& ops, Tensor& out, LayerPieceSaved& sv, const PassContext& ctx) const;
  // What the feed-forward half's backward needs, recomputed from h2 (without fc2 in pre-LN).
  void ffn_half_recompute(Ops& ops, LayerPieceSaved& sv, const PassContext& ctx) const;
  // dout -> dh2 (returned).
  Tensor ffn_half_backward(Ops& ops, const Tensor& dout, const LayerPieceSaved& sv,
                           const PassContext& ctx);
  // ---- the pass over the pieces (transformer_layer_pass.cpp) ----
  int64_t piece_tokens(int64_t tokens, const PassContext& ctx) const;
  // The cache the attention reads: LN1(C) in the pre-LN order (stats: its statistics), else C.
  Tensor attention_cache(Ops& ops, const Tensor& cache, LayerNormSaved& stats) const;
  // Rows [t0, t0 + n) of the attention's input: LN1(x) (pre-LN) or x.
  Tensor attention_input_rows(Ops& ops, const TransformerLayerSaved& sv, int64_t t0,
                              int64_t n) const;
  // dx[rows t0..] += the gradient reaching x from dh, the gradient of those attention input rows.
  void add_attention_input_gradient(Ops& ops, const TransformerLayerSaved& sv, int64_t t0,
                                    const Tensor& dh, Tensor& dx);

  int64_t index_ = 0;
  ModelConfig cfg_;
  ParameterList params_;
};

}  // namespace tls
