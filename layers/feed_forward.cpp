#include "layers/feed_forward.h"

#include "parallel/mappings.h"

namespace tls {

void FeedForward::init(Ops& ops, ParameterList& params, const std::string& name, int64_t d_model,
                       int64_t d_inner, bool use_gelu, DType dtype, const Topology& topo) {
  use_gelu_ = use_gelu;
  d_inner_ = d_inner;
  topo_ = &topo;
  fc1.init(ops, params, name + ".fc1", d_model, d_inner, true, dtype, TpSplit::column, &topo);
  fc2.init(ops, params, name + ".fc2", d_inner, d_model, true, dtype, TpSplit::row, &topo);
}

void FeedForward::forward_activations(Ops& ops, const Tensor& h, FeedForwardSaved& saved,
                                      const PassContext& ctx, uint64_t dropout_id) const {
  const int64_t tokens = h.dim(1), local = fc1.out_features();
  const int64_t col_offset = topo_->tp_rank * local;
  copy_to_tp_forward(*topo_, h);
  saved.pre_act = Tensor();
  fc1.forward(ops, h, saved.pre_act);
  saved.act = ops.empty(saved.pre_act.shape(), h.dtype());
  if (use_gelu_)
    ops.gelu_forward(saved.act, saved.pre_act);
  else
    ops.relu_forward(saved.act, saved.pre_act);
  if (ctx.training && ctx.dropout > 0)
    ctx.drop(ops, saved.act, ctx.dropout, dropout_id, tokens, d_inner_, col_offset);
}

void FeedForward::forward(Ops& ops, const Tensor& h, Tensor& out, FeedForwardSaved& saved,
                          const PassContext& ctx, uint64_t dropout_id) const {
  const int64_t tokens = h.dim(1);
  forward_activations(ops, h, saved, ctx, dropout_id);
  fc2.forward(ops, saved.act, out);
  if (ctx.training && ctx.dropout > 0) ctx.drop(ops, out, ctx.dropout, dropout_id + 1, tokens);
}

void FeedForward::backward(Ops& ops, const Tensor& dout, const Tensor& h,
                           const FeedForwardSaved& saved, Tensor& dh, const PassContext& ctx,
                           uint64_t dropout_id) {
  const int64_t tokens = h.dim(1), local = fc1.out_features();
  const bool drop = ctx.training && ctx.dropout > 0;
  Tensor dfc2 = dout;
  if (drop) {
    dfc2 = ops.empty(dout.shape(), dout.dtype());
    ops.copy(dfc2, dout);
    ctx.drop(ops, dfc2, ctx.dropout, dropout_id + 1, tokens);
  }
  Tensor dact = ops.zeros(saved.act.shape(), dout.dtype());
  fc2.backward(ops, dfc2, saved.act, dact);
  if (drop) ctx.drop(ops, dact, ctx.dropout, dropout_id, tokens, d_inner_, topo_->tp_rank * local);
  Tensor dpre = ops.zeros(saved.pre_act.shape(), dout.dtype());
  if (use_gelu_)
    ops.gelu_backward(dpre, dact, saved.pre_act);
  else
    ops.relu_backward(dpre, dact, saved.pre_act);
  // dh from this rank's d_inner columns is partial over tp.
  Tensor dh_partial = ops.zeros(h.shape(), dout.dtype());
  fc1.backward(ops, dpre, h, dh_partial);
  copy_to_tp_backward(*topo_, dh_partial);
  ops.axpy(1.0, dh_partial, dh);
}

}  // namespace tls
