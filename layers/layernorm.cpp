#include "layers/layernorm.h"

namespace tls {

void LayerNorm::init(Ops& ops, ParameterList& params, const std::string& name, int64_t features,
                     DType dtype) {
  features_ = features;
  params.allocate(ops, weight, ParameterGroup::layernorm, name + ".weight", {features}, {}, dtype);
  params.allocate(ops, bias, ParameterGroup::layernorm, name + ".bias", {features}, {}, dtype);
  ops.fill(weight.value, 1.0);
}

void LayerNorm::init_split(Ops& ops, ParameterList& params, const std::string& name,
                           int64_t features, int64_t offset, int64_t local, DType dtype,
                           const Topology& topo) {
  features_ = features;
  split_ = &topo;
  params.allocate(ops, weight, ParameterGroup::layernorm, name + ".weight", {local}, {features},
                  dtype);
  params.allocate(ops, bias, ParameterGroup::layernorm, name + ".bias", {local}, {features}, dtype);
  weight.shard_along(0, offset, local);
  bias.shard_along(0, offset, local);
  ops.fill(weight.value, 1.0);
}

void LayerNorm::forward(Ops& ops, const Tensor& x, Tensor& y, LayerNormSaved& saved) const {
  if (split_) {
    tp_layernorm_forward(ops, *split_, x, weight.value, bias.value, features_, kEps, y, saved);
    return;
  }
  if (!y.defined()) y = ops.empty(x.shape(), x.dtype());
  saved.mean = ops.empty({x.matrix_rows()}, x.dtype());
  saved.rstd = ops.empty({x.matrix_rows()}, x.dtype());
  ops.layernorm_forward(y, saved.mean, saved.rstd, x, weight.value, bias.value, kEps);
}

void LayerNorm::backward(Ops& ops, const Tensor& dy, const Tensor& x, const LayerNormSaved& saved,
                         Tensor& dx) {
  if (split_) {
    tp_layernorm_backward(ops, *split_, dy, x, weight.value, saved, features_, dx, weight.grad,
                          bias.grad);
    return;
  }
  ops.layernorm_backward(dx, weight.grad, bias.grad, dy, x, weight.value, saved.mean, saved.rstd);
}

}  // namespace tls
