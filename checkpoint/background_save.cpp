// BackgroundSaver: one writer thread per save; the ranks learn together that a save is complete
// through an allreduce of each rank's state (done < running < failed).
#include "checkpoint/background_save.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <thread>

#include "checkpoint/checkpoint_dir.h"
#include "checkpoint/durable_files.h"
#include "kernels/error.h"
#include "parallel/fault_injection.h"
#include "parallel/rank_agreement.h"

namespace tls {

BackgroundSaver::BackgroundSaver(const Topology& t) : t_(t) {}

BackgroundSaver::~BackgroundSaver() { join(); }

void BackgroundSaver::join() {
  if (writer_.joinable()) writer_.join();
}

void BackgroundSaver::start(const std::string& dir, int keep_last,
                            const CheckpointContents& contents, Ops& ops, bool best) {
  wait();
  std::string error;
  if (t_.world_rank == 0) {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) error = "cannot create the save directory '" + dir + "': " + ec.message();
  }
  throw_if_any_rank_failed(*t_.world, error);
  const std::string path =
      (std::filesystem::path(dir) / checkpoint_file_name(contents.step)).string();
  save_ = begin_save(path, contents, t_, ops, std::move(spare_), /*defer_copies=*/true);
  spare_.clear();
  {
    std::lock_guard<std::mutex> lock(snapshot_mutex_);
    snapshot_pending_ = true;
  }
  dir_ = dir;
  keep_last_ = keep_last;
  best_ = best;
  phase_ = Phase::parts;
  run_in_background(&BackgroundSaver::write_this_part);
}

void BackgroundSaver::run_in_background(void (BackgroundSaver::*step)()) {
  join();
  error_.clear();
  state_ = running;
  writer_ = std::thread([this, step] {
    // No MPI here: the files each step writes are this rank's alone.
    try {
      (this->*step)();
      state_ = done;
    } catch (const std::exception& e) {
      error_ = e.what();
      state_ = failed;
    }
    snapshot_taken();  // also after a failure: the trainer must not wait forever
  });
}

void BackgroundSaver::snapshot_taken() {
  {
    std::lock_guard<std::mutex> lock(snapshot_mutex_);
    snapshot_pending_ = false;
  }
  snapshot_changed_.notify_all();
}

void BackgroundSaver::wait_for_snapshot() {
  std::unique_lock<std::mutex> lock(snapshot_mutex_);
  snapshot_changed_.wait(lock, [&] { return !snapshot_pending_; });
}

void BackgroundSaver::write_this_part() {
  // The copy while the next step's forward and backward read the same tensors; first, so the
  // optimizer's update waits as little as possible.
  if (fault_switch_on("save_slow")) std::this_thread::sleep_for(std::chrono::seconds(2));
  save_->take_snapshot();
  snapshot_taken();
  write_part(*save_);
}

void BackgroundSaver::complete_on_rank0() {
  write_master(*save_);
  if (fault_rank("save_link") == 0) {
    std::fprintf(stderr, "%s: rank 0 aborts before checkpoint_last names the new checkpoint\n",
                 kFaultInjectVariable);
    std::fflush(stderr);
    std::abort();
  }
  const std::string name = std::filesystem::path(save_->path).filename().string();
  point_last_at(dir_, name);
  if (best_) point_best_at(dir_, name);
  to_delete_ = files_to_prune(dir_, keep_last_);
}

void BackgroundSaver::prune_on_rank0() { delete_files(dir_, to_delete_); }

BackgroundSaver::Progress BackgroundSaver::progress() const {
  if (!in_flight()) return {};
  const State state = static_cast<State>(state_.load());
  return {state == running ? 1.0 : 0.0, state == failed ? 1.0 : 0.0};
}

BackgroundSaver::State BackgroundSaver::worst(const Progress& summed) {
  return summed.failed > 0 ? failed : summed.running > 0 ? running : done;
}

BackgroundSaver::Progress BackgroundSaver::summed_progress() const {
  const Progress mine = progress();
  Tensor sums = Tensor::empty({2}, DType::f64);
  sums.data<double>()[0] = mine.running;
  sums.data<double>()[1] = mine.failed;
  t_.world->allreduce_sum(sums);
  return {sums.data<double>()[0], sums.data<double>()[1]};
}

std::string BackgroundSaver::poll(const Progress& summed) {
  if (!in_flight()) return "";
  const State state = worst(summed);
  return state == running ? "" : advance(state);
}

std::string BackgroundSaver::poll() { return in_flight() ? poll(summed_progress()) : ""; }

std::string BackgroundSaver::wait() {
  std::string completed;
  while (in_flight()) {
    join();  // this rank's step is over; the others finish theirs
    const std::string path = advance(agreed_state());
    if (!path.empty()) completed = path;
  }
  return completed;
}

std::string BackgroundSaver::advance(State state) {
  join();
  if (state == failed) return fail();
  if (phase_ == Phase::parts) {  // every part is durable: rank 0 writes the checkpoint
    phase_ = Phase::checkpoint;
    for (HostBlock& b : save_->blocks) b.held = Tensor();  // old caches: training's to free
    if (t_.world_rank == 0) run_in_background(&BackgroundSaver::complete_on_rank0);
    return "";
  }
  if (phase_ == Phase::pruning) {
    phase_ = Phase::parts;
    return "";
  }
  // The checkpoint is complete and named: what is left is housekeeping.
  phase_ = Phase::pruning;
  if (t_.world_rank == 0) run_in_background(&BackgroundSaver::prune_on_rank0);
  std::unique_ptr<PendingSave> save = std::move(save_);
  spare_ = std::move(save->blocks);
  return save->path;
}

std::string BackgroundSaver::fail() {
  std::unique_ptr<PendingSave> save = std::move(save_);
  phase_ = Phase::parts;
  const std::string error = state_ == failed ? error_ : "";
  const std::string agreed = error_message_of([&] { throw_if_any_rank_failed(*t_.world, error); });
  // A part is only ever named by its own checkpoint: without one, it is of no use.
  std::error_code ignored;
  if (save != nullptr && !std::filesystem::exists(save->path))
    std::filesystem::remove(save->part_path(t_.world_rank), ignored);
  throw CollectiveError(agreed);  // every rank has it: printed once
}

}  // namespace tls
