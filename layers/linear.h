// Linear layer, PyTorch convention: y = x W^T + b with W [out, in] (the reference's layout, so
// checkpoints map one to one). The caller keeps x for the backward:
//   dW += dy^T x,  db += sum_rows(dy),  dx += dy W.
// Tensor parallel (Megatron):
//   column-parallel: holds out/tp rows of W (and of b); its input gradient is partial over tp
//     and the caller sums it (copy_to_tp's backward), once for every projection of one input;
//   row-parallel: holds in/tp columns of W and the whole b; the forward sums the ranks' partial
//     products over tp (reduce_from_tp) and then adds b once; the backward reads the complete
//     output gradient (reduce_from_tp's backward is the identity) and every tp rank computes the
//     same, complete, bias gradient.
#pragma once

#include "layers/parameter.h"
#include "parallel/topology.h"

namespace tls {

enum class TpSplit { none, column, row };

class Linear {
 public:
  // Declares weight (and bias) in `params`. topo: the tp group a split layer is cut over.
  void init(Ops& ops, ParameterList& params, const std::string& name, int64_t in_features,
            int64_t out_features, bool with_bias, DType dtype, TpSplit split = TpSplit::none,
            const Topology* topo = nullptr);
  // x: [..., in_local] -> y: [..., out_local] (allocated when undefined); row-parallel: summed
  // over tp, bias included.
  void forward(Ops& ops, const Tensor& x, Tensor& y) const;
  // dx may be undefined when x needs no gradient.
  void backward(Ops& ops, const Tensor& dy, const Tensor& x, Tensor& dx);

  int64_t in_features() const { return in_; }    // local
  int64_t out_features() const { return out_; }  // local
  Parameter weight;
  Parameter bias;  // undefined when the layer has no bias

 private:
  int64_t in_ = 0, out_ = 0;
  TpSplit split_ = TpSplit::none;
  const Topology* topo_ = nullptr;
};

// A tensor's shape with its last dimension replaced.
std::vector<int64_t> with_last_dim(const Tensor& x, int64_t last);

}  // namespace tls
