// Saving while training goes on (docs/DESIGN.md section 5). start() blocks the caller only while
// every rank copies its state to host memory (checkpoint_writer.h's begin_save); a background
// thread per rank then writes that rank's part file. poll(), called once per training step, is
// one small allreduce: once every rank's part is durable, rank 0 starts a second background step
// that writes the checkpoint and points checkpoint_last.h5 (and checkpoint_best.h5 when asked) at
// it and lists what pruning to --keep-last deletes; the poll that sees that step done completes
// the save on every rank. Rank 0 then deletes those files on the same thread (deleting a large
// checkpoint takes a while; no HDF5 there); the next start() or wait() waits for the deleting and
// reports its failure.
// wait() blocks until the save in flight is complete; the next start() waits for it first, so
// two saves never overlap and HDF5 (not thread-safe) is only ever used by one thread at a time
// (the training loop does not use HDF5 while a save is in flight).
//
// A failed write on any rank (a full disk) is seen by every rank at the next poll() or wait(),
// which waits for its own rank's writer, deletes this save's part files and throws the failing
// rank's one-line message on every rank; the previous checkpoint is untouched. Destroying the
// saver with a save in flight (an error elsewhere) waits for this rank's writer and leaves the
// unfinished save's parts to the next prune.
//
// Fault injection (tests only): TLS_FAULT_INJECT=save_slow makes the background thread sleep 2 s
// before it copies the parameters; TLS_FAULT_INJECT=save_link_abort_rank0 makes rank 0 abort after
// the checkpoint is renamed into place, before checkpoint_last.h5 names it (other points:
// checkpoint_writer.h).
#pragma once

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "checkpoint/checkpoint_writer.h"

namespace tls {

class BackgroundSaver {
 public:
  explicit BackgroundSaver(const Topology& t);
  ~BackgroundSaver();
  BackgroundSaver(const BackgroundSaver&) = delete;
  BackgroundSaver& operator=(const BackgroundSaver&) = delete;

  // Collective. Waits for a save in flight, then starts saving `contents` as
  // <dir>/checkpoint_<step>.h5; `best` also names it checkpoint_best.h5. keep_last <= 0 keeps
  // every checkpoint. Host caches are held, not copied (checkpoint_writer.h); host parameters
  // and moments are copied on the background thread: the caller must call wait_for_snapshot()
  // before it next changes any of them (the optimizer's update), and may read them meanwhile.
  void start(const std::string& dir, int keep_last, const CheckpointContents& contents, Ops& ops,
             bool best = false);
  // This rank's share of the per-step agreement: 1 in `running` while its step of the save runs,
  // 1 in `failed` once that step failed; zeros with no save in flight.
  struct Progress {
    double running = 0, failed = 0;
  };
  Progress progress() const;
  // Cheap; `summed` is every rank's progress() summed over the world at the same point of every
  // rank's step. Collective only when the save failed (the ranks agree on the message, then
  // throw). Returns the path of the checkpoint completed by this call, else "".
  std::string poll(const Progress& summed);
  // Collective: every rank's progress() summed over the world in one small allreduce.
  Progress summed_progress() const;
  // Collective and cheap: poll(summed_progress()).
  std::string poll();
  // Collective. Blocks until the save in flight (if any) is complete; returns its path or "".
  std::string wait();
  bool in_flight() const { return save_ != nullptr || phase_ == Phase::pruning; }
  // Not collective: blocks until the save in flight has copied the parameters and moments
  // (at once when there is none). The trainer calls it before each optimizer update.
  void wait_for_snapshot();

 private:
  enum State : int { done = 0, running = 1, failed = 2 };
  enum class Phase { parts, checkpoint, pruning };
  // Collective: the state every rank agrees on (the worst).
  State agreed_state() const { return worst(summed_progress()); }
  static State worst(const Progress& summed);
  // Collective: the next step once every rank agreed on `state` (done or failed).
  std::string advance(State state);
  // Rank 0, on the background thread: the checkpoint and the links; then the pruning.
  void complete_on_rank0();
  void prune_on_rank0();
  std::string fail();
  void run_in_background(void (BackgroundSaver::*step)());
  void write_this_part();
  void join();
  void snapshot_taken();

  Topology t_;
  std::string dir_;
  int keep_last_ = 0;
  bool best_ = false;
  std::unique_ptr<PendingSave> save_;
  Phase phase_ = Phase::parts;
  std::vector<HostBlock> spare_;  // the last save's buffers, reused by the next
  std::thread writer_;
  std::atomic<int> state_{done};
  std::mutex snapshot_mutex_;
  std::condition_variable snapshot_changed_;
  bool snapshot_pending_ = false;       // under snapshot_mutex_
  std::string error_;                   // written by the writer before state_ becomes failed
  std::vector<std::string> to_delete_;  // rank 0: what pruning deletes
};

}  // namespace tls
