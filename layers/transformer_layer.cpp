// TransformerLayer: the module, its parameters and the steps of its two halves on one piece;
// the pass that runs them over the block is in transformer_layer_pass.cpp.
#include "layers/transformer_layer.h"

namespace tls {

void TransformerLayer::init(Ops& ops, int64_t index, const ModelConfig& cfg, DType dtype,
                            const Topology& topo) {
  index_ = index;
  cfg_ = cfg;
  const std::string name = "layers." + std::to_string(index);
  attn.init(ops, params_, name + ".attn", cfg, dtype, topo, static_cast<int>(index));
  norm1.init(ops, params_, name + ".norm1", cfg.d_model, dtype);
  norm2.init(ops, params_, name + ".norm2", cfg.d_model, dtype);
  ff.init(ops, params_, name + ".ff", cfg.d_model, cfg.d_inner, cfg.use_gelu, dtype, topo);
}

void TransformerLayer::attention_residual(Ops& ops, const Tensor& residual, Tensor& a,
                                          LayerPieceSaved& sv, const PassContext& ctx) const {
  if (ctx.training && ctx.dropout > 0) ctx.drop(ops, a, ctx.dropout, dropout_id(0), a.dim(1));
  if (cfg_.pre_ln) {
    // h2 = h1 + drop(a), residual = h1 = LN1(x)
    sv.h2 = ops.empty(residual.shape(), residual.dtype());
    ops.copy(sv.h2, residual);
    ops.axpy(1.0, a, sv.h2);
  } else {
    // h1 = x + drop(a), residual = x; h2 = LN1(h1)
    sv.h1 = ops.empty(residual.shape(), residual.dtype());
    ops.copy(sv.h1, residual);
    ops.axpy(1.0, a, sv.h1);
    norm1.forward(ops, sv.h1, sv.h2, sv.ln1);
  }
}

void TransformerLayer::ffn_half(Ops& ops, Tensor& out, LayerPieceSaved& sv,
                                const PassContext& ctx) const {
  if (cfg_.pre_ln) {
    // h3 = LN2(h2); out = h3 + ffn(h3)
    norm2.forward(ops, sv.h2, sv.h3, sv.ln2);
    ff.forward(ops, sv.h3, out, sv.ffn, ctx, dropout_id(1));
    ops.axpy(1.0, sv.h3, out);
  } else {
    // out = LN2(h2 + ffn(h2))
    Tensor f;
    ff.forward(ops, sv.h2, f, sv.ffn, ctx, dropout_id(1));
    sv.post_ffn_in = f;
    ops.axpy(1.0, sv.h2, sv.post_ffn_in);
    norm2.forward(ops, sv.post_ffn_in, out, sv.ln2);
  }
}

void TransformerLayer::ffn_half_recompute(Ops& ops, LayerPieceSaved& sv,
                                          const PassContext& ctx) const {
  if (cfg_.pre_ln) {  // the backward needs LN2(h2) and fc1's activations, not fc2's output
    norm2.forward(ops, sv.h2, sv.h3, sv.ln2);
    ff.forward_activations(ops, sv.h3, sv.ffn, ctx, dropout_id(1));
  } else {
    Tensor out;
    ffn_half(ops, out, sv, ctx);
  }
}

Tensor TransformerLayer::ffn_half_backward(Ops& ops, const Tensor& dout, const LayerPieceSaved& sv,
                                           const PassContext& ctx) {
  const DType dt = dout.dtype();
  Tensor dh2 = ops.zeros(dout.shape(), dt);
  if (cfg_.pre_ln) {
    Tensor dh3 = ops.empty(dout.shape(), dt);
    ops.copy(dh3, dout);
    ff.backward(ops, dout, sv.h3, sv.ffn, dh3, ctx, dropout_id(1));
    norm2.backward(ops, dh3, sv.h2, sv.ln2, dh2);
  } else {
    Tensor dpost = ops.zeros(dout.shape(), dt);
    norm2.backward(ops, dout, sv.post_ffn_in, sv.ln2, dpost);
    ops.copy(dh2, dpost);
    ff.backward(ops, dpost, sv.h2, sv.ffn, dh2, ctx, dropout_id(1));
  }
  return dh2;
}

}  // namespace tls
