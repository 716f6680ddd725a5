// LayerNorm over the last dimension, eps = 1e-5, biased variance (fairseq's LayerNorm):
//   y = (x - mean) * rstd * gamma + beta.
// The saved statistics (mean, rstd per row) let the backward skip a second pass. A LayerNorm
// split over tp (the attention's LN_win and LN_dproj) holds only its ranks' feature columns
// and all-reduces the row statistics (parallel/tp_layernorm.h).
#pragma once

#include "layers/parameter.h"
#include "parallel/tp_layernorm.h"

namespace tls {

using LayerNormSaved = LayerNormStats;

class LayerNorm {
 public:
  static constexpr double kEps = 1e-5;
  // Replicated: features is the whole row. Declares weight and bias in `params`.
  void init(Ops& ops, ParameterList& params, const std::string& name, int64_t features,
            DType dtype);
  // Split over tp: this rank holds features [offset, offset + local) of a row of `features`.
  void init_split(Ops& ops, ParameterList& params, const std::string& name, int64_t features,
                  int64_t offset, int64_t local, DType dtype, const Topology& topo);
  void forward(Ops& ops, const Tensor& x, Tensor& y, LayerNormSaved& saved) const;
  // dx may be undefined (e.g. the cache rows, which get no gradient).
  void backward(Ops& ops, const Tensor& dy, const Tensor& x, const LayerNormSaved& saved,
                Tensor& dx);

  Parameter weight, bias;

 private:
  const Topology* split_ = nullptr;
  int64_t features_ = 0;
};

}  // namespace tls
