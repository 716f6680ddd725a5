// Position-wise feed-forward block of the reference (FeedForwardLayer):
//   f = dropout(fc2(dropout(act(fc1(h)))))     act = GELU (erf form) or ReLU
// Dropout sites: after the activation and after fc2 (training only).
// Tensor parallel: fc1 column-parallel, fc2 row-parallel, one all-reduce forward (fc2's
// reduce_from_tp) and one backward (copy_to_tp of fc1's input gradient).
#pragma once

#include "layers/linear.h"
#include "layers/pass_context.h"

namespace tls {

struct FeedForwardSaved {
  Tensor pre_act;  // fc1(h), this rank's d_inner columns
  Tensor act;      // act(pre_act) after dropout: fc2's input
};

class FeedForward {
 public:
  // Declares fc1 and fc2 in `params`.
  void init(Ops& ops, ParameterList& params, const std::string& name, int64_t d_model,
            int64_t d_inner, bool use_gelu, DType dtype, const Topology& topo);
  // dropout_id: first of two dropout tensor ids this block may use.
  void forward(Ops& ops, const Tensor& h, Tensor& out, FeedForwardSaved& saved,
               const PassContext& ctx, uint64_t dropout_id) const;
  // What the backward needs, without fc2 (the recomputation of activation checkpointing).
  void forward_activations(Ops& ops, const Tensor& h, FeedForwardSaved& saved,
                           const PassContext& ctx, uint64_t dropout_id) const;
  void backward(Ops& ops, const Tensor& dout, const Tensor& h, const FeedForwardSaved& saved,
                Tensor& dh, const PassContext& ctx, uint64_t dropout_id);

  Linear fc1, fc2;

 private:
  bool use_gelu_ = true;
  int64_t d_inner_ = 0;
  const Topology* topo_ = nullptr;
};

}  // namespace tls
