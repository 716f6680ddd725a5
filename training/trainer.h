// One training update on any parallel layout (docs/DESIGN.md sections 3 and 4): each rank reads its
// data-parallel rows and sequence-parallel positions of update u's --update-freq blocks from the
// corpus; each block runs forward with the carried caches and backward, its gradients added to
// the update's; then gradients are summed over dp x sp, clipped by the global norm (every shard
// counted once), and AdamW steps once. The loss is the mean NLL over every target of the update's
// blocks and global rows. Caches restart at zeros with each epoch; an epoch ends when fewer than
// --update-freq blocks remain.
#pragma once

#include <chrono>
#include <functional>
#include <memory>

#include "layers/model.h"
#include "training/byte_corpus.h"
#include "training/optimizer.h"

namespace tls {

struct TrainSettings {
  int64_t batch_size = 1;  // B_global: rows of the corpus (split over the dp groups)
  // Blocks per update (fairseq's --update-freq under truncated BPTT): one update sums the
  // gradients of this many consecutive blocks of the same rows, the caches carried between them.
  int64_t update_freq = 1;
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
  // Called before each optimizer update changes the parameters and moments in place: a
  // background save copies them while the step's forward and backward read them
  // (BackgroundSaver::wait_for_snapshot).
  void set_before_update(std::function<void()> hook) { before_update_ = std::move(hook); }

 private:
  Ops& ops_;
  TransformerLSModel& model_;
  const ByteCorpus& corpus_;
  TrainSettings settings_;
  AdamW optimizer_;
  ModelState state_;
  int64_t update_ = 0;  // updates done so far
  int64_t local_batch_ = 1;
  int64_t updates_per_epoch_ = 1;  // floor(corpus blocks per epoch / update_freq)
  std::function<void()> before_update_;
};

}  // namespace tls
