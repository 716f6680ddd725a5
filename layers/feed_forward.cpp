#include "layers/feed_forward.h"

namespace tls {

void FeedForward::init(Ops& ops, const std::string& name, int64_t d_model, int64_t d_inner,
                       bool use_gelu, DType dtype) {
  use_gelu_ = use_gelu;
  fc1.init(ops, name + ".fc1", d_model, d_inner, true, dtype);
  fc2.init(ops, name + ".fc2", d_inner, d_model, true, dtype);
}

void FeedForward::forward(Ops& ops, const Tensor& h, Tensor& out, FeedForwardSaved& saved,
                          const PassContext& ctx, uint64_t dropout_id) const {
  const int64_t tokens = h.dim(1);
  saved.pre_act = Tensor();
  fc1.forward(ops, h, saved.pre_act);
  saved.act = ops.empty(saved.pre_act.shape(), h.dtype());
  if (use_gelu_)
    ops.gelu_forward(saved.act, saved.pre_act);
  else
    ops.relu_forward(saved.act, saved.pre_act);
  if (ctx.training && ctx.dropout > 0) ops.dropout_apply(saved.act, ctx.dropout, ctx.key(dropout_id, tokens));
  fc2.forward(ops, saved.act, out);
  if (ctx.training && ctx.dropout > 0) ops.dropout_apply(out, ctx.dropout, ctx.key(dropout_id + 1, tokens));
}

void FeedForward::backward(Ops& ops, const Tensor& dout, const Tensor& h,
                           const FeedForwardSaved& saved, Tensor& dh, const PassContext& ctx,
                           uint64_t dropout_id) {
  const int64_t tokens = h.dim(1);
  const bool drop = ctx.training && ctx.dropout > 0;
  Tensor dfc2 = dout;
  if (drop) {
    dfc2 = ops.empty(dout.shape(), dout.dtype());
    ops.copy(dfc2, dout);
    ops.dropout_apply(dfc2, ctx.dropout, ctx.key(dropout_id + 1, tokens));
  }
  Tensor dact = ops.zeros(saved.act.shape(), dout.dtype());
  fc2.backward(ops, dfc2, saved.act, dact);
  if (drop) ops.dropout_apply(dact, ctx.dropout, ctx.key(dropout_id, tokens));
  Tensor dpre = ops.zeros(saved.pre_act.shape(), dout.dtype());
  if (use_gelu_)
    ops.gelu_backward(dpre, dact, saved.pre_act);
  else
    ops.relu_backward(dpre, dact, saved.pre_act);
  fc1.backward(ops, dpre, h, dh);
}

}  // namespace tls
