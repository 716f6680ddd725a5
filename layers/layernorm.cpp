#include "layers/layernorm.h"

namespace tls {

void LayerNorm::init(Ops& ops, const std::string& name, int64_t features, DType dtype) {
  weight.allocate(ops, name + ".weight", {features}, {}, dtype);
  bias.allocate(ops, name + ".bias", {features}, {}, dtype);
  ops.fill(weight.value, 1.0);
}

void LayerNorm::forward(Ops& ops, const Tensor& x, Tensor& y, LayerNormSaved& saved) const {
  if (!y.defined()) y = ops.empty(x.shape(), x.dtype());
  saved.mean = ops.empty({x.matrix_rows()}, x.dtype());
  saved.rstd = ops.empty({x.matrix_rows()}, x.dtype());
  ops.layernorm_forward(y, saved.mean, saved.rstd, x, weight.value, bias.value, kEps);
}

void LayerNorm::backward(Ops& ops, const Tensor& dy, const Tensor& x, const LayerNormSaved& saved,
                         Tensor& dx) {
  ops.layernorm_backward(dx, weight.grad, bias.grad, dy, x, weight.value, saved.mean, saved.rstd);
}

}  // namespace tls
