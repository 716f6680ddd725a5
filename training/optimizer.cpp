#include "training/optimizer.h"

#include <algorithm>
#include <cmath>

namespace tls {

double learning_rate(const OptimizerSettings& s, int64_t update) {
  if (s.warmup_updates <= 0) return s.lr;
  return s.lr * std::min(1.0, static_cast<double>(update) / static_cast<double>(s.warmup_updates));
}

AdamW::AdamW(Ops& ops, std::vector<Parameter*> params, OptimizerSettings settings)
    : ops_(ops), params_(std::move(params)), settings_(settings) {
  for (Parameter* p : params_) {
    exp_avg_.push_back(ops_.zeros(p->value.shape(), p->value.dtype()));
    exp_avg_sq_.push_back(ops_.zeros(p->value.shape(), p->value.dtype()));
  }
}

void AdamW::clip(double grad_norm) {
  if (settings_.clip_norm <= 0 || grad_norm <= settings_.clip_norm) return;
  const double factor = settings_.clip_norm / (grad_norm + 1e-6);
  for (Parameter* p : params_) ops_.scale(p->grad, factor);
}

double AdamW::step(int64_t update) {
  const double lr = learning_rate(settings_, update);
  for (size_t i = 0; i < params_.size(); ++i)
    ops_.adamw_step(params_[i]->value, params_[i]->grad, exp_avg_[i], exp_avg_sq_[i], lr,
                    settings_.beta1, settings_.beta2, settings_.eps, settings_.weight_decay,
                    update);
  return lr;
}

}  // namespace tls
