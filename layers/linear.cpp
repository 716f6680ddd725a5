#include "layers/linear.h"

#include "kernels/error.h"
#include "parallel/mappings.h"

namespace tls {

std::vector<int64_t> with_last_dim(const Tensor& x, int64_t last) {
  std::vector<int64_t> shape = x.shape();
  shape.back() = last;
  return shape;
}

void Linear::init(Ops& ops, ParameterList& params, const std::string& name, int64_t in_features,
                  int64_t out_features, bool with_bias, DType dtype, TpSplit split,
                  const Topology* topo) {
  split_ = split;
  topo_ = split == TpSplit::none ? nullptr : topo;
  const int tp = topo_ ? topo_->layout.tp : 1;
  const int rank = tp == 1 ? 0 : topo_->tp_rank;
  const int64_t split_size = split == TpSplit::column ? out_features : in_features;
  if (split_size % tp != 0)
    throw Error("linear " + name + ": " + std::to_string(split_size) +
                " features do not split over --tp " + std::to_string(tp));
  out_ = split == TpSplit::column ? out_features / tp : out_features;
  in_ = split == TpSplit::row ? in_features / tp : in_features;
  params.allocate(ops, weight, ParameterGroup::linear, name + ".weight", {out_, in_},
                  {out_features, in_features}, dtype);
  if (split == TpSplit::column) weight.shard_along(0, rank * out_, out_);
  if (split == TpSplit::row) weight.shard_along(1, rank * in_, in_);
  if (with_bias) {
    params.allocate(ops, bias, ParameterGroup::linear, name + ".bias", {out_}, {out_features},
                    dtype);
    if (split == TpSplit::column) bias.shard_along(0, rank * out_, out_);
  }
}

void Linear::forward(Ops& ops, const Tensor& x, Tensor& y) const {
  if (x.dim(-1) != in_)
    throw Error("linear " + weight.name + ": input " + x.shape_string() + " does not end in " +
                std::to_string(in_));
  if (!y.defined()) y = ops.empty(with_last_dim(x, out_), x.dtype());
  ops.gemm(false, true, 1.0, x, weight.value, 0.0, y);
  // Row-parallel: the bias is added once, after the partial products are summed.
  if (split_ == TpSplit::row && topo_) reduce_from_tp_forward(*topo_, y);
  if (bias.defined()) ops.add_bias(y, bias.value);
}

void Linear::backward(Ops& ops, const Tensor& dy, const Tensor& x, Tensor& dx) {
  Tensor dout = dy;
  if (split_ == TpSplit::row && topo_) reduce_from_tp_backward(*topo_, dout);
  ops.gemm(true, false, 1.0, dout, x, 1.0, weight.grad);
  if (bias.defined()) ops.sum_rows(dout, bias.grad);
  if (dx.defined()) ops.gemm(false, false, 1.0, dout, weight.value, 1.0, dx);
}

}  // namespace tls
