// One single-process training step (forward, backward, AdamW) of a config on the CPU backend,
// timed, for the benches that compare it with the machine's GEMM rate or across lengths.
#pragma once

#include <sys/resource.h>

#include <algorithm>
#include <memory>
#include <vector>

#include "bench/timing.h"
#include "layers/init.h"
#include "layers/model.h"
#include "training/optimizer.h"

namespace tls::bench {

// The process's resident high-water mark (it never goes down).
inline double peak_rss_gib() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / (1024.0 * 1024.0);
}

class TrainingStep {
 public:
  TrainingStep(Ops& ops, const ModelConfig& cfg, DType dtype, int64_t batch, bool checkpointing,
               int64_t recompute_piece = 0)
      : cfg_(cfg), batch_(batch), model_(ops, cfg, dtype) {
    initialize_parameters(ops, model_, 1);
    adam_ = std::make_unique<AdamW>(ops, model_.parameters(), OptimizerSettings());
    state_ = model_.initial_state(batch);
    std::vector<double> tok(static_cast<size_t>(batch * cfg.tokens_per_sample));
    for (size_t i = 0; i < tok.size(); ++i) tok[i] = static_cast<double>((i * 131 + 7) % 256);
    tokens_ = ops.empty({batch, cfg.tokens_per_sample}, DType::i32);
    ops.from_host(tokens_, tok);
    ctx_.training = true;
    ctx_.activation_checkpointing = checkpointing;
    ctx_.recompute_piece = recompute_piece;
  }

  // One update; returns the mean loss per token.
  double run() {
    model_.zero_grad();
    ModelSaved saved;
    const double nll = model_.forward(tokens_, tokens_, state_, saved, ctx_);
    model_.backward(saved, 1.0 / static_cast<double>(saved.n_targets), ctx_);
    saved = ModelSaved();
    adam_->step(++update_);
    return nll / static_cast<double>(batch_ * cfg_.tokens_per_sample);
  }

  // Seconds per step, after one untimed step unless !warmup, over at least `steps` steps and
  // until `min_seconds` of stepping have passed: the mean, and the fastest step (on a shared
  // machine other work only ever adds time, so the fastest step is the steadiest estimate of
  // what a step costs, and more steps give it more chances).
  struct Times {
    double mean = 0, fastest = 0;
    int64_t steps = 0;
  };
  Times time(int64_t steps, double* last_loss = nullptr, bool warmup = true,
             double min_seconds = 0) {
    if (warmup) run();
    Times t;
    double loss = 0, total = 0;
    while (t.steps < steps || total < min_seconds) {
      const double sec = seconds_of([&] { loss = run(); });
      total += sec;
      t.fastest = t.steps == 0 ? sec : std::min(t.fastest, sec);
      ++t.steps;
    }
    t.mean = total / static_cast<double>(t.steps);
    if (last_loss) *last_loss = loss;
    return t;
  }

 private:
  ModelConfig cfg_;
  int64_t batch_;
  TransformerLSModel model_;
  std::unique_ptr<AdamW> adam_;
  ModelState state_;
  Tensor tokens_;
  PassContext ctx_;
  int64_t update_ = 0;
};

}  // namespace tls::bench
