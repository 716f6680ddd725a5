// AdamW exactly as torch.optim.AdamW defines it (docs/DESIGN.md section 4), the reference's
// learning-rate schedule, and global-norm gradient clipping.
//   lr(u) = lr * min(1, u / warmup_updates)        (u = 1, 2, ...; fixed after warm-up)
//   clip:  if ||g|| > clip_norm > 0, g *= clip_norm / (||g|| + 1e-6)   (fairseq's rule)
#pragma once

#include <vector>

#include "layers/parameter.h"

namespace tls {

struct OptimizerSettings {
  double lr = 2.5e-4;
  int64_t warmup_updates = 0;
  double beta1 = 0.9, beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
  double clip_norm = 0.0;  // 0 = off
};

double learning_rate(const OptimizerSettings& s, int64_t update);

class AdamW {
 public:
  AdamW(Ops& ops, std::vector<Parameter*> params, OptimizerSettings settings);

  // Scales the gradients so their norm (training/gradient_reduction.h: global_gradient_norm) is
  // at most clip_norm (no-op when clipping is off).
  void clip(double grad_norm);
  // One update with the learning rate of update `update` (1-based); returns that rate.
  double step(int64_t update);

  std::vector<Parameter*>& params() { return params_; }
  std::vector<Tensor>& exp_avg() { return exp_avg_; }
  std::vector<Tensor>& exp_avg_sq() { return exp_avg_sq_; }
  const OptimizerSettings& settings() const { return settings_; }

 private:
  Ops& ops_;
  std::vector<Parameter*> params_;
  std::vector<Tensor> exp_avg_, exp_avg_sq_;
  OptimizerSettings settings_;
};

}  // namespace tls
