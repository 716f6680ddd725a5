#include "layers/linear.h"

#include "runtime/error.h"

namespace tls {

std::vector<int64_t> with_last_dim(const Tensor& x, int64_t last) {
  std::vector<int64_t> shape = x.shape();
  shape.back() = last;
  return shape;
}

void Linear::init(Ops& ops, const std::string& name, int64_t in_features, int64_t out_features,
                  bool with_bias, DType dtype) {
  in_ = in_features;
  out_ = out_features;
  weight.allocate(ops, name + ".weight", {out_, in_}, {}, dtype);
  if (with_bias) bias.allocate(ops, name + ".bias", {out_}, {}, dtype);
}

void Linear::forward(Ops& ops, const Tensor& x, Tensor& y) const {
  if (x.dim(-1) != in_)
    throw Error("linear " + weight.name + ": input " + x.shape_string() + " does not end in " +
                std::to_string(in_));
  if (!y.defined()) y = ops.empty(with_last_dim(x, out_), x.dtype());
  ops.gemm(false, true, 1.0, x, weight.value, 0.0, y);
  if (bias.defined()) ops.add_bias(y, bias.value);
}

void Linear::backward(Ops& ops, const Tensor& dy, const Tensor& x, Tensor& dx) {
  ops.gemm(true, false, 1.0, dy, x, 1.0, weight.grad);
  if (bias.defined()) ops.sum_rows(dy, bias.grad);
  if (dx.defined()) ops.gemm(false, false, 1.0, dy, weight.value, 1.0, dx);
}

}  // namespace tls
