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

struct TransformerLayerSaved {
  Tensor x, cache;          // the layer's input and the cache it attended to
  Tensor h1, cache_normed;  // pre-LN: LN1(x), LN1(C)
  LayerNormSaved ln1, ln1_cache, ln2;
  Tensor h2, h3;       // pre-LN: h1 + a, LN2(h2); post-LN: x + a, LN1(.)
  Tensor post_ffn_in;  // post-LN: h2 + f (LN2's input)
  LSAttentionSaved attn;
  FeedForwardSaved ffn;
  LSAttentionSlots slots;  // activation checkpointing: the attention's compressed slots
};

// The layer runs as two halves with one tensor between them, h2 (the feed-forward half's input
// in both orders): the attention half maps (x, C) to h2, the feed-forward half maps h2 to out.
// Activation checkpointing keeps only x, C, h2 and the attention's compressed slots per layer,
// and runs both halves in sequence pieces (transformer_layer_pieces.cpp): only one piece's
// activations exist at a time, in the forward and in the recomputing backward.
class TransformerLayer {
 public:
  void init(Ops& ops, int64_t index, const ModelConfig& cfg, DType dtype, const Topology& topo);
  void forward(Ops& ops, const Tensor& x, const Tensor& cache, const PositionTables& pos,
               Tensor& out, TransformerLayerSaved& saved, const PassContext& ctx) const;
  // dx accumulates the gradient of the layer's input.
  void backward(Ops& ops, const Tensor& dout, const PositionTables& pos,
                const TransformerLayerSaved& saved, Tensor& dx, const PassContext& ctx);

  // Activation checkpointing: the forward keeps x, cache, h2 and the compressed slots only; the
  // backward recomputes the feed-forward half from h2 piece by piece, then the attention half
  // from x and the slots. The same math as forward/backward with the same dropout masks; only
  // the order of the sums over pieces differs.
  void forward_keeping_inputs(Ops& ops, const Tensor& x, const Tensor& cache,
                              const PositionTables& pos, Tensor& out, TransformerLayerSaved& saved,
                              const PassContext& ctx) const;
  void backward_recomputing(Ops& ops, const Tensor& dout, const PositionTables& pos,
                            const TransformerLayerSaved& inputs, Tensor& dx,
                            const PassContext& ctx);
  std::vector<Parameter*> parameters();

  LSAttention attn;
  LayerNorm norm1, norm2;
  FeedForward ff;

 private:
  uint64_t dropout_id(int site) const { return 16 + static_cast<uint64_t>(index_) * 8 + site; }
  // (x, C) -> sv.h2, filling the attention half's saved tensors.
  void attention_half(Ops& ops, const Tensor& x, const Tensor& cache, const PositionTables& pos,
                      TransformerLayerSaved& sv, const PassContext& ctx) const;
  // sv.h2 -> out, filling the feed-forward half's saved tensors.
  void ffn_half(Ops& ops, Tensor& out, TransformerLayerSaved& sv, const PassContext& ctx) const;
  // dout -> dh2 (returned), and dh2 -> dx (accumulated; dh2 is used up: the attention
  // dropout's mask is applied to it in place).
  Tensor ffn_half_backward(Ops& ops, const Tensor& dout, const TransformerLayerSaved& sv,
                           const PassContext& ctx);
  void attention_half_backward(Ops& ops, Tensor& dh2, const PositionTables& pos,
                               const TransformerLayerSaved& sv, Tensor& dx, const PassContext& ctx);
  // Activation checkpointing's pieces (transformer_layer_pieces.cpp).
  int64_t piece_tokens(int64_t tokens, const PassContext& ctx) const;
  // Rows [t0, t0 + n) of the attention's input: LN1(x) (pre-LN) or x.
  Tensor attention_input_rows(Ops& ops, const Tensor& x, int64_t t0, int64_t n) const;
  // dx[rows t0..] += the gradient reaching x from dh, the gradient of those attention input rows.
  void add_attention_input_gradient(Ops& ops, const Tensor& x, int64_t t0, const Tensor& dh,
                                    Tensor& dx);
  int64_t index_ = 0;
  ModelConfig cfg_;
};

}  // namespace tls
