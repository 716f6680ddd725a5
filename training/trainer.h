// One training update on any parallel layout (docs/DESIGN.md sections 3 and 4): each rank reads its
// data-parallel rows and sequence-parallel positions of update u's block from the corpus,
// forward with the carried caches, backward, gradients summed over dp x sp, clipping by the
// global norm (every shard counted once), AdamW. The loss is the mean NLL over every target of
// the global batch. Caches restart at zeros with each epoch.
#pragma once

#include <chrono>
#include <memory>

#include "layers/model.h"
#include "training/byte_corpus.h"
#include "training/optimizer.h"

namespace tls {

struct TrainSettings {
  int64_t batch_size = 1;  // B_global: rows of the corpus (split over the dp groups)
  uint64_t seed = 1;
  bool activation_checkpointing = false;
  OptimizerSettings optimizer;
};

struct StepMetrics {
  int64_t step = 0;  // the update just made (1-based)
  double loss = 0;   // mean NLL in nats over the update's targets
  double bpc = 0;    // loss / ln 2
  double lr = 0;
  double grad_norm = 0;  // before clipping
  double tokens_per_s = 0;
  bool skipped = false;  // a non-finite loss or gradient: the update was not applied
};

class Trainer {
 public:
  Trainer(Ops& ops, TransformerLSModel& model, const ByteCorpus& corpus, TrainSettings settings);

  StepMetrics train_step();
  int64_t update() const { return update_; }
  // After loading a checkpoint: the number of updates already done (the caches in state() and
  // the optimizer's moments are loaded in place).
  void set_update(int64_t update) { update_ = update; }
  ModelState& state() { return state_; }
  AdamW& optimizer() { return optimizer_; }

 private:
  Ops& ops_;
  TransformerLSModel& model_;
  const ByteCorpus& corpus_;
  TrainSettings settings_;
  AdamW optimizer_;
  ModelState state_;
  int64_t update_ = 0;  // updates done so far
  int64_t local_batch_ = 1;
};

}  // namespace tls
