// One Transformer-LS layer (the reference's TransformerLSLayer), DESIGN.md section 1.
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

namespace tls {

struct TransformerLayerSaved {
  Tensor x, cache;             // the layer's input and the cache it attended to
  Tensor h1, cache_normed;     // pre-LN: LN1(x), LN1(C)
  LayerNormSaved ln1, ln1_cache, ln2;
  Tensor h2, h3;               // pre-LN: h1 + a, LN2(h2); post-LN: x + a, LN1(.)
  Tensor post_ffn_in;          // post-LN: h2 + f (LN2's input)
  LSAttentionSaved attn;
  FeedForwardSaved ffn;
};

class TransformerLayer {
 public:
  void init(Ops& ops, int64_t index, const ModelConfig& cfg, DType dtype, const Topology& topo);
  void forward(Ops& ops, const Tensor& x, const Tensor& cache, const PositionTables& pos,
               Tensor& out, TransformerLayerSaved& saved, const PassContext& ctx) const;
  // dx accumulates the gradient of the layer's input.
  void backward(Ops& ops, const Tensor& dout, const PositionTables& pos,
                const TransformerLayerSaved& saved, Tensor& dx, const PassContext& ctx);
  std::vector<Parameter*> parameters();

  LSAttention attn;
  LayerNorm norm1, norm2;
  FeedForward ff;

 private:
  uint64_t dropout_id(int site) const { return 16 + static_cast<uint64_t>(index_) * 8 + site; }
  int64_t index_ = 0;
  ModelConfig cfg_;
};

}  // namespace tls
