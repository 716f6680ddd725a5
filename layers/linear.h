// Linear layer, PyTorch convention: y = x W^T + b with W [out, in] (the reference's layout, so
// checkpoints map one to one). The caller keeps x for the backward:
//   dW += dy^T x,  db += sum_rows(dy),  dx += dy W.
// Tensor parallel (Megatron): a column-parallel layer holds out/tp rows of W (and of b); a
// row-parallel one holds in/tp columns of W and the whole b, which the caller adds with
// add_bias after summing the partial outputs over tp (reduce_from_tp).
#pragma once

#include "layers/parameter.h"
#include "parallel/topology.h"

namespace tls {

enum class TpSplit { none, column, row };

class Linear {
 public:
  void init(Ops& ops, const std::string& name, int64_t in_features, int64_t out_features,
            bool with_bias, DType dtype, TpSplit split = TpSplit::none,
            const Topology* topo = nullptr);
  // x: [..., in_local] -> y: [..., out_local] (allocated when undefined). A row-parallel layer
  // leaves out the bias (see add_bias).
  void forward(Ops& ops, const Tensor& x, Tensor& y) const;
  void add_bias(Ops& ops, Tensor& y) const;
  // dx may be undefined when x needs no gradient.
  void backward(Ops& ops, const Tensor& dy, const Tensor& x, Tensor& dx);

  int64_t in_features() const { return in_; }    // local
  int64_t out_features() const { return out_; }  // local
  Parameter weight;
  Parameter bias;  // undefined when the layer has no bias

 private:
  int64_t in_ = 0, out_ = 0;
  TpSplit split_ = TpSplit::none;
};

// A tensor's shape with its last dimension replaced.
std::vector<int64_t> with_last_dim(const Tensor& x, int64_t last);

}  // namespace tls
