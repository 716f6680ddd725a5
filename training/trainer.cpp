#include "training/trainer.h"

#include <cmath>

#include "kernels/error.h"
#include "parallel/fault_injection.h"
#include "parallel/sequence_layout.h"
#include "training/gradient_reduction.h"

namespace tls {

Trainer::Trainer(Ops& ops, TransformerLSModel& model, const ByteCorpus& corpus,
                 TrainSettings settings)
    : ops_(ops),
      model_(model),
      corpus_(corpus),
      settings_(settings),
      optimizer_(ops, model.parameters(), settings.optimizer),
      state_() {
  const Topology& topo = model.topology();
  validate_batch(settings.batch_size, topo.layout.dp);
  local_batch_ = settings.batch_size / topo.layout.dp;
  if (settings.update_freq < 1)
    throw Error("--update-freq " + std::to_string(settings.update_freq) + " must be at least 1");
  updates_per_epoch_ = corpus.blocks_per_epoch() / settings.update_freq;
  if (updates_per_epoch_ < 1)
    throw Error("--update-freq " + std::to_string(settings.update_freq) + " exceeds the " +
                std::to_string(corpus.blocks_per_epoch()) + " blocks of an epoch of " +
                corpus.path() + " at --batch-size " + std::to_string(settings.batch_size) +
                " and --tokens-per-sample " + std::to_string(model.config().tokens_per_sample));
  state_ = model.initial_state(local_batch_);
  if (corpus.rows() != settings.batch_size ||
      corpus.tokens_per_sample() != model.config().tokens_per_sample)
    throw Error("trainer: corpus " + corpus.path() +
                " is cut for another batch size or block length");
}

StepMetrics Trainer::train_step() {
  const auto start = std::chrono::steady_clock::now();
  const ModelConfig& cfg = model_.config();
  const Topology& topo = model_.topology();
  const int64_t B = local_batch_, T = model_.local_tokens();
  const int64_t in_epoch = update_ % updates_per_epoch_;
  if (in_epoch == 0) state_ = model_.initial_state(B);  // a new epoch restarts the caches

  PassContext ctx;
  ctx.training = true;
  ctx.seed = settings_.seed;
  ctx.dropout = cfg.dropout;
  ctx.emb_dropout = cfg.emb_dropout;
  ctx.activation_checkpointing = settings_.activation_checkpointing;

  // Every block of the update adds its gradient, scaled by 1 / (all the update's targets): each
  // block holds rows x T targets, so that is 1 / (update_freq x the block's count).
  const int64_t blocks = settings_.update_freq;
  // This rank's positions of every block (parallel/sequence_layout.h).
  const std::vector<Segment> segments =
      SequenceLayout::of(topo.layout, cfg.tokens_per_sample).segments(topo.sp_rank);
  model_.zero_grad();
  double nll = 0, n = 0;
  for (int64_t k = 0; k < blocks; ++k) {
    std::vector<int32_t> inputs, targets;
    corpus_.batch(in_epoch * blocks + k, topo.dp_rank * B, B, segments, inputs, targets);
    Tensor tokens = ops_.empty({B, T}, DType::i32);
    Tensor target_tensor = ops_.empty({B, T}, DType::i32);
    ops_.from_host(tokens, std::vector<double>(inputs.begin(), inputs.end()));
    ops_.from_host(target_tensor, std::vector<double>(targets.begin(), targets.end()));
    // Each block draws its own dropout masks: the key's step counts blocks, not updates.
    ctx.step = static_cast<uint64_t>(update_ * blocks + k + 1);
    ModelSaved saved;
    // tp ranks hold the same tokens: the loss is summed over dp x sp only.
    nll += topo.dp_sp->allreduce_sum(model_.forward(tokens, target_tensor, state_, saved, ctx));
    const double n_block = topo.dp_sp->allreduce_sum(static_cast<double>(saved.n_targets));
    n += n_block;
    if (k == 0) maybe_inject_fault("step", topo.world_rank);
    const double scale = 1.0 / (static_cast<double>(blocks) * n_block);
    // The last block's backward reduces each layer's finished gradients while it goes on.
    if (k + 1 < blocks)
      model_.backward(saved, scale, ctx);
    else
      backward_and_reduce_gradients(model_, saved, scale, ctx);
  }  // each block's activations are freed before the next block and the optimizer's pass
  const int poison_from = nonfinite_loss_from();
  const double loss = poison_from >= 0 && update_ + 1 >= poison_from ? std::nan("") : nll / n;

  StepMetrics m;
  m.step = ++update_;
  m.loss = loss;
  m.bpc = m.loss / std::log(2.0);
  m.grad_norm = global_gradient_norm(ops_, topo, model_.parameters());
  m.lr = learning_rate(settings_.optimizer, update_);
  // A non-finite loss or gradient is not applied (every rank sees the same reduced values).
  m.skipped = !std::isfinite(m.loss) || !std::isfinite(m.grad_norm);
  if (!m.skipped) {
    if (before_update_) before_update_();
    optimizer_.clip(m.grad_norm);
    optimizer_.step(update_);
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  m.tokens_per_s = static_cast<double>(blocks * settings_.batch_size * cfg.tokens_per_sample) /
                   topo.world->allreduce_max(seconds);
  return m;
}

}  // namespace tls
