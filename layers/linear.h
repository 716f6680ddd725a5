// Linear layer, PyTorch convention: y = x W^T + b with W [out, in] (the reference's layout, so
// checkpoints map one to one). The caller keeps x for the backward:
//   dW += dy^T x,  db += sum_rows(dy),  dx += dy W.
#pragma once

#include "layers/parameter.h"

namespace tls {

class Linear {
 public:
  void init(Ops& ops, const std::string& name, int64_t in_features, int64_t out_features,
            bool with_bias, DType dtype);
  // x: [..., in] -> y: [..., out] (y is allocated by forward when undefined).
  void forward(Ops& ops, const Tensor& x, Tensor& y) const;
  // dx may be undefined when x needs no gradient.
  void backward(Ops& ops, const Tensor& dy, const Tensor& x, Tensor& dx);

  int64_t in_features() const { return in_; }
  int64_t out_features() const { return out_; }
  Parameter weight;
  Parameter bias;  // undefined when the layer has no bias

 private:
  int64_t in_ = 0, out_ = 0;
};

// A tensor's shape with its last dimension replaced.
std::vector<int64_t> with_last_dim(const Tensor& x, int64_t last);

}  // namespace tls
