// Ends a rank whose training has stopped making progress. When a whole node is lost (its ranks
// and the launcher's daemon with them), nothing tells the other ranks: Open MPI notes the broken
// connection but does not abort, so they would wait in their next collective until the cluster
// notices the node (Slurm: SlurmdTimeout, minutes). A thread on every rank watches the time since
// the last finished update and, past the limit, prints one line and exits non-zero, which the
// launcher turns into the end of the job (mpirun; srun --kill-on-bad-exit).
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

namespace tls {

// The stall limit in seconds: `option` (--stall-timeout) when positive, otherwise 20 times the
// slowest update seen, at least 300 s.
double stall_limit_seconds(double option, double slowest_update);

class StallWatchdog {
 public:
  using OnStall = std::function<void(const std::string& line)>;
  // `on_stall` gets the line (default: print it to stderr and _Exit(1)); called at most once.
  StallWatchdog(int rank, double option, OnStall on_stall = {});
  ~StallWatchdog();
  StallWatchdog(const StallWatchdog&) = delete;
  StallWatchdog& operator=(const StallWatchdog&) = delete;

  // An update finished: the clock restarts. Nothing is watched before the first one.
  void beat();
  // What follows may take long without a peer being lost (validation, the test split, the last
  // save): not watched until the matching resume() (pauses nest).
  void pause();
  void resume();

 private:
  using Clock = std::chrono::steady_clock;
  void watch();

  const int rank_;
  const double option_;
  OnStall on_stall_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool armed_ = false, measured_ = false, stop_ = false;
  int paused_ = 0;
  Clock::time_point last_;
  double slowest_ = 0;
  std::thread thread_;
};

}  // namespace tls
