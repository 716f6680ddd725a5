// tls_dist train (docs/DESIGN.md sections 4 and 6). Before any work, on every rank: the grid, the
// backend, the model's hyperparameters (from a resumed or fine-tuned checkpoint, or the flags),
// the layout's rules and the corpora are checked, and any rank's refusal stops every rank with
// one line. Then: resume from <save-dir>/checkpoint_last.h5 by itself when it exists, train to
// --max-update with logs, validation and checkpoints, and on SIGTERM/SIGUSR1 save at the next
// step boundary and exit 0. Checkpoints are written in the background
// (checkpoint/background_save.h): each step asks whether the save in flight is complete; a signal,
// the end of training and a failure wait for it.
#include <sys/stat.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <limits>

#include "checkpoint/background_save.h"
#include "checkpoint/checkpoint_dir.h"
#include "kernels/cpu/blas_core.h"
#include "kernels/error.h"
#include "layers/init.h"
#include "parallel/mpi_comm.h"
#include "parallel/rank_agreement.h"
#include "runtime/commands.h"
#include "runtime/run_setup.h"
#include "runtime/signals.h"
#include "runtime/stall_watchdog.h"
#include "training/evaluator.h"
#include "training/metrics_log.h"

namespace tls {
namespace {

struct TrainSetup {
  Topology topo;
  std::unique_ptr<Ops> ops;
  ModelConfig config;
  DType dtype = DType::f32;
  std::string resume_from;  // checkpoint_last when resuming
  CheckpointInfo info;      // of resume_from or --finetune-from-model
  std::unique_ptr<ByteCorpus> corpus;
  // The validation loss of checkpoint_best.h5 when resuming a run that has one, else +inf.
  double best_valid_loss = std::numeric_limits<double>::infinity();
  std::string sp_note;  // which sp layout runs and why (the start-up line)
};

// What every rank must agree on after each update, carried by one allreduce: whether any rank
// was signalled to stop, and how far the save in flight has got (so the save adds no collective
// of its own to a step, and every rank moves through it at the same step).
struct StepAgreement {
  bool stop = false;
  BackgroundSaver::Progress save;
};

StepAgreement agree_after_step(Comm& world, const BackgroundSaver& saver) {
  const BackgroundSaver::Progress mine = saver.progress();
  Tensor sums = Tensor::empty({3}, DType::f64);
  double* v = sums.data<double>();
  v[0] = stop_signalled() ? 1 : 0;
  v[1] = mine.running;
  v[2] = mine.failed;
  world.allreduce_sum(sums);
  return {v[0] > 0, {v[1], v[2]}};
}

void prepare(const RunOptions& o, TrainSetup& s) {
  s.ops = make_backend(o);
  s.dtype = dtype_of_precision(o.precision);
  const std::string last = last_checkpoint_path(o.save_dir);
  if (std::filesystem::exists(last)) {
    s.resume_from = last;
    s.info = read_checkpoint_info(last);
    s.config = reconcile_with_checkpoint(o, s.info, false);
    if (s.info.has_training && s.info.training.batch_size != o.training.batch_size)
      throw Error("--batch-size " + std::to_string(o.training.batch_size) + " differs from " +
                  std::to_string(s.info.training.batch_size) + " of the run being resumed from " +
                  last + " (the data stream depends on it)");
    if (s.info.has_training && s.info.training.update_freq != o.training.update_freq)
      throw Error("--update-freq " + std::to_string(o.training.update_freq) + " differs from " +
                  std::to_string(s.info.training.update_freq) + " of the run being resumed from " +
                  last + " (the data stream depends on it)");
    const std::string best = best_checkpoint_path(o.save_dir);
    if (std::filesystem::exists(best)) {
      const double loss = read_checkpoint_info(best).valid_loss;
      if (std::isfinite(loss)) s.best_valid_loss = loss;
    }
  } else if (!o.finetune_from.empty()) {
    s.info = read_checkpoint_info(o.finetune_from);
    s.config = reconcile_with_checkpoint(o, s.info, true);
  } else {
    s.config = o.model;
  }
  s.config.validate();
  s.topo.layout.sp_order = choose_sp_order(o, s.config, s.sp_note);
  s.config.validate_layout(s.topo.layout.tp, s.topo.layout.sp, s.topo.layout.sp_order);
  validate_batch(o.training.batch_size, s.topo.layout.dp);
  s.corpus =
      std::make_unique<ByteCorpus>(o.train_data, o.training.batch_size, s.config.tokens_per_sample);
  // A corpus changed under a run would silently shift every row stream: refuse to resume on it.
  if (!s.resume_from.empty() && s.info.data_bytes >= 0 &&
      (s.info.data_bytes != s.corpus->size() || s.info.data_digest != s.corpus->digest()))
    throw Error("--train-data " + o.train_data + " is not the corpus " + s.resume_from +
                " was trained on (" + std::to_string(s.info.data_bytes) + " bytes then, " +
                std::to_string(s.corpus->size()) + " now" +
                (s.info.data_bytes == s.corpus->size() ? ", different contents" : "") + ")");
  for (const std::string& f : {o.valid_data, o.test_data})
    if (!f.empty()) ByteStream check(f, s.config.tokens_per_sample);
  std::error_code ec;
  std::filesystem::create_directories(o.save_dir, ec);
  if (!std::filesystem::is_directory(o.save_dir))
    throw Error("--save-dir " + o.save_dir + " is not a directory and cannot be created");
}

}  // namespace

int run_train(const RunOptions& o) {
  install_stop_handlers();
  MpiComm world(MPI_COMM_WORLD, "world");
  TrainSetup s;
  throw_if_any_rank_failed(world, error_message_of([&] { s.topo = make_run_topology(o); }));
  throw_if_any_rank_failed(*s.topo.world, error_message_of([&] { prepare(o, s); }));
  Ops& ops = *s.ops;
  const Topology& topo = s.topo;
  const bool rank0 = topo.world_rank == 0;

  TransformerLSModel model(ops, s.config, s.dtype, topo);
  TrainSettings settings = o.training;
  const int64_t data_digest = s.corpus->digest();
  Trainer trainer(ops, model, *s.corpus, settings);
  auto contents = [&] {
    CheckpointContents c = checkpoint_contents(model, &trainer.optimizer(), &trainer.state(),
                                               trainer.update(), settings);
    c.data_bytes = s.corpus->size();
    c.data_digest = data_digest;
    return c;
  };
  MetricsLog log(o.save_dir + "/metrics.jsonl", rank0);
  if (!s.resume_from.empty()) {
    CheckpointContents c = contents();
    const CheckpointInfo info = load_checkpoint(s.resume_from, c, topo, ops);
    trainer.set_update(info.step);
    log.note("resumed from " + s.resume_from + " at update " + std::to_string(info.step) +
             (o.finetune_from.empty()
                  ? std::string()
                  : "; --finetune-from-model " + o.finetune_from +
                        " is ignored: the save directory already holds this run"));
  } else if (!o.finetune_from.empty()) {
    CheckpointContents c = checkpoint_contents(model, nullptr, nullptr, 0, settings);
    LoadOptions load;
    load.weights_only = true;
    load.allow_length_change = true;
    load_checkpoint(o.finetune_from, c, topo, ops, load);
    log.note("fine-tuning from the weights of " + o.finetune_from);
  } else {
    initialize_parameters(ops, model, o.seed);
  }
  log.note(
      "tls_dist train: " + describe(s.config) + "; layout tp=" + std::to_string(topo.layout.tp) +
      " sp=" + std::to_string(topo.layout.sp) + " dp=" + std::to_string(topo.layout.dp) + "; " +
      (topo.layout.sp > 1 || o.given("sp-layout") ? s.sp_note + "; " : std::string()) +
      std::to_string(model.parameter_count()) + " parameters; " + o.device + " " + o.precision +
      (ops.gemm_inputs() == GemmInputs::exact
           ? ""
           : std::string(" (") + to_string(ops.gemm_inputs()) + " GEMM operands" +
                 (model.activation_storage() == DType::bf16 ? "; bfloat16 saved activations" : "") +
                 ")") +
      (o.device == "cpu" ? "; " + cpu::blas_core_description() : std::string()));

  int64_t saved_at = trainer.update();
  double best_valid_loss = s.best_valid_loss, valid_loss = 0;
  int64_t validated_at = -1;
  BackgroundSaver saver(topo);
  trainer.set_before_update([&] { saver.wait_for_snapshot(); });
  bool saving_best = false;
  auto report = [&](const std::string& path) {
    if (path.empty()) return;
    log.note("saved " + path +
             (saving_best
                  ? " (the best so far: validation loss " + std::to_string(best_valid_loss) + ")"
                  : std::string()));
  };
  // A lost peer ends this rank instead of leaving it in a collective forever (the launcher then
  // ends the job). Waits for a save to be durable, validation and the test split are not timed:
  // their length depends on the file system and the data, not on the peers.
  StallWatchdog watchdog(topo.world_rank, o.stall_timeout);
  // Starts saving this update's state (after the save in flight); `best` also names it
  // checkpoint_best.h5.
  auto save = [&](bool best) {
    watchdog.pause();
    report(saver.wait());
    watchdog.resume();
    CheckpointContents c = contents();
    if (validated_at == trainer.update()) c.valid_loss = valid_loss;
    saver.start(o.save_dir, o.keep_last, c, ops, best);
    saved_at = trainer.update();
    saving_best = best;
    if (best) best_valid_loss = valid_loss;
  };
  auto validate = [&] {
    if (o.valid_data.empty()) return;
    watchdog.pause();
    const EvalResult r = evaluate(model, o.valid_data, o.valid_max_bytes);
    watchdog.resume();
    log.valid(trainer.update(), r.loss(), r.count);
    valid_loss = r.loss();
    validated_at = trainer.update();
  };
  // A validation that beats every earlier one is saved at once and becomes checkpoint_best.h5.
  auto is_new_best = [&] {
    return validated_at == trainer.update() && valid_loss < best_valid_loss;
  };

  const int64_t first = trainer.update();
  const auto start = std::chrono::steady_clock::now();
  int64_t bad_steps = 0;
  while (trainer.update() < o.max_update) {
    const StepMetrics m = trainer.train_step();
    watchdog.beat();
    const double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double eta =
        elapsed / static_cast<double>(m.step - first) * static_cast<double>(o.max_update - m.step);
    if (m.skipped) {
      ++bad_steps;
      log.note("warning: update " + std::to_string(m.step) +
               " has a non-finite loss or gradient; skipped (" + std::to_string(bad_steps) +
               " in a row)");
      if (bad_steps >= o.max_bad_steps) {
        watchdog.pause();
        save(false);  // skipped updates left the weights untouched: this is the last good state
        report(saver.wait());
        throw CollectiveError(
            std::to_string(bad_steps) +
            " consecutive updates had a non-finite loss or gradient (--max-bad-steps " +
            std::to_string(o.max_bad_steps) + "); the last good state is saved in " + o.save_dir);
      }
    } else {
      bad_steps = 0;
    }
    if (m.step % o.log_interval == 0 || m.step == o.max_update) log.train(m, eta);
    if (o.validate_interval > 0 && m.step % o.validate_interval == 0) validate();
    if (is_new_best() || (o.save_interval > 0 && m.step % o.save_interval == 0))
      save(is_new_best());
    const StepAgreement agreed = agree_after_step(*topo.world, saver);
    report(saver.poll(agreed.save));
    if (agreed.stop) {
      watchdog.pause();
      if (saved_at != trainer.update()) save(false);
      report(saver.wait());
      log.note("stopping on signal " + std::to_string(stop_signal()) + " at update " +
               std::to_string(trainer.update()));
      return 0;
    }
  }
  watchdog.pause();
  if (o.validate_interval == 0) validate();
  if (saved_at != trainer.update() || is_new_best()) save(is_new_best());
  report(saver.wait());
  if (!o.test_data.empty()) {
    const EvalResult r = evaluate(model, o.test_data);
    log.note("test | loss " + std::to_string(r.loss()) + " | bpc " + std::to_string(r.bpc()) +
             " | tokens " + std::to_string(r.count));
  }
  return 0;
}

}  // namespace tls
