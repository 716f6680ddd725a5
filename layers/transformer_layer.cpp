#include "layers/transformer_layer.h"

namespace tls {

void TransformerLayer::init(Ops& ops, int64_t index, const ModelConfig& cfg, DType dtype,
                            const Topology& topo) {
  index_ = index;
  cfg_ = cfg;
  const std::string name = "layers." + std::to_string(index);
  attn.init(ops, name + ".attn", cfg, dtype, topo, static_cast<int>(index));
  norm1.init(ops, name + ".norm1", cfg.d_model, dtype);
  norm2.init(ops, name + ".norm2", cfg.d_model, dtype);
  ff.init(ops, name + ".ff", cfg.d_model, cfg.d_inner, cfg.use_gelu, dtype, topo);
}

std::vector<Parameter*> TransformerLayer::parameters() {
  std::vector<Parameter*> out;
  for (Linear* l : {&attn.proj_query, &attn.proj_key, &attn.proj_val, &attn.proj_out, &attn.r_net,
                    &attn.r_net_chunk, &attn.dconv_1, &ff.fc1, &ff.fc2}) {
    out.push_back(&l->weight);
    if (l->bias.defined()) out.push_back(&l->bias);
  }
  out.push_back(&attn.r_w_bias);
  out.push_back(&attn.r_r_bias);
  for (LayerNorm* n : {&attn.dual_ln_win, &attn.dual_ln_dproj, &norm1, &norm2}) {
    out.push_back(&n->weight);
    out.push_back(&n->bias);
  }
  return out;
}

void TransformerLayer::attention_half(Ops& ops, const Tensor& x, const Tensor& cache,
                                      const PositionTables& pos, TransformerLayerSaved& sv,
                                      const PassContext& ctx) const {
  const int64_t tokens = x.dim(1);
  const bool drop = ctx.training && ctx.dropout > 0;
  sv.x = x;
  sv.cache = cache;
  Tensor a;
  if (cfg_.pre_ln) {
    // h1 = LN1(x), C' = LN1(C); h2 = h1 + drop(attn(h1, C'))
    norm1.forward(ops, x, sv.h1, sv.ln1);
    norm1.forward(ops, cache, sv.cache_normed, sv.ln1_cache);
    attn.forward(ops, sv.h1, sv.cache_normed, pos, a, sv.attn);
    if (drop) ops.dropout_apply(a, ctx.dropout, ctx.key(dropout_id(0), tokens));
    sv.h2 = ops.empty(x.shape(), x.dtype());
    ops.copy(sv.h2, sv.h1);
    ops.axpy(1.0, a, sv.h2);
  } else {
    // h1 = x + drop(attn(x, C)); h2 = LN1(h1)
    attn.forward(ops, x, cache, pos, a, sv.attn);
    if (drop) ops.dropout_apply(a, ctx.dropout, ctx.key(dropout_id(0), tokens));
    sv.h1 = ops.empty(x.shape(), x.dtype());
    ops.copy(sv.h1, x);
    ops.axpy(1.0, a, sv.h1);
    norm1.forward(ops, sv.h1, sv.h2, sv.ln1);
  }
}

void TransformerLayer::ffn_half(Ops& ops, Tensor& out, TransformerLayerSaved& sv,
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

Tensor TransformerLayer::ffn_half_backward(Ops& ops, const Tensor& dout,
                                           const TransformerLayerSaved& sv,
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

void TransformerLayer::attention_half_backward(Ops& ops, Tensor& dh2, const PositionTables& pos,
                                               const TransformerLayerSaved& sv, Tensor& dx,
                                               const PassContext& ctx) {
  const DType dt = dh2.dtype();
  const int64_t tokens = dh2.dim(1);
  const bool drop = ctx.training && ctx.dropout > 0;
  Tensor no_grad;
  if (cfg_.pre_ln) {
    Tensor dh1 = ops.empty(dh2.shape(), dt);
    ops.copy(dh1, dh2);
    if (drop) ops.dropout_apply(dh2, ctx.dropout, ctx.key(dropout_id(0), tokens));
    Tensor dcache = ops.zeros(sv.cache.shape(), dt);
    attn.backward(ops, dh2, sv.h1, sv.cache_normed, pos, sv.attn, dh1, dcache);
    norm1.backward(ops, dh1, sv.x, sv.ln1, dx);
    norm1.backward(ops, dcache, sv.cache, sv.ln1_cache, no_grad);
  } else {
    Tensor dh1 = ops.zeros(dh2.shape(), dt);
    norm1.backward(ops, dh2, sv.h1, sv.ln1, dh1);
    ops.axpy(1.0, dh1, dx);
    if (drop) ops.dropout_apply(dh1, ctx.dropout, ctx.key(dropout_id(0), tokens));
    attn.backward(ops, dh1, sv.x, sv.cache, pos, sv.attn, dx, no_grad);
  }
}

void TransformerLayer::forward(Ops& ops, const Tensor& x, const Tensor& cache,
                               const PositionTables& pos, Tensor& out, TransformerLayerSaved& sv,
                               const PassContext& ctx) const {
  sv = TransformerLayerSaved();
  attention_half(ops, x, cache, pos, sv, ctx);
  ffn_half(ops, out, sv, ctx);
}

void TransformerLayer::backward(Ops& ops, const Tensor& dout, const PositionTables& pos,
                                const TransformerLayerSaved& sv, Tensor& dx,
                                const PassContext& ctx) {
  Tensor dh2 = ffn_half_backward(ops, dout, sv, ctx);
  attention_half_backward(ops, dh2, pos, sv, dx, ctx);
}

}  // namespace tls
