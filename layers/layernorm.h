// LayerNorm over the last dimension, eps = 1e-5, biased variance (fairseq's LayerNorm):
//   y = (x - mean) * rstd * gamma + beta.
// The saved statistics (mean, rstd per row) let the backward skip a second pass.
#pragma once

#include "layers/parameter.h"

namespace tls {

struct LayerNormSaved {
  Tensor mean, rstd;
};

class LayerNorm {
 public:
  static constexpr double kEps = 1e-5;
  void init(Ops& ops, const std::string& name, int64_t features, DType dtype);
  void forward(Ops& ops, const Tensor& x, Tensor& y, LayerNormSaved& saved) const;
  // dx may be undefined (e.g. the cache rows, which get no gradient).
  void backward(Ops& ops, const Tensor& dy, const Tensor& x, const LayerNormSaved& saved,
                Tensor& dx);

  Parameter weight, bias;
};

}  // namespace tls
