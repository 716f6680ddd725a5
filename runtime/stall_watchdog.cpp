#include "runtime/stall_watchdog.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <sstream>

namespace tls {

double stall_limit_seconds(double option, double slowest_update) {
  if (option > 0) return option;
  return std::max(300.0, 20.0 * slowest_update);
}

StallWatchdog::StallWatchdog(int rank, double option, OnStall on_stall)
    : rank_(rank), option_(option), on_stall_(std::move(on_stall)) {
  if (!on_stall_)
    on_stall_ = [](const std::string& line) {
      std::fprintf(stderr, "%s\n", line.c_str());
      std::fflush(stderr);
      std::_Exit(1);
    };
  thread_ = std::thread([this] { watch(); });
}

StallWatchdog::~StallWatchdog() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

void StallWatchdog::beat() {
  std::lock_guard<std::mutex> lock(mutex_);
  const Clock::time_point now = Clock::now();
  // An update timed from the previous beat, not across a pause.
  if (armed_ && measured_)
    slowest_ = std::max(slowest_, std::chrono::duration<double>(now - last_).count());
  armed_ = true;
  measured_ = true;
  last_ = now;
  wake_.notify_all();
}

void StallWatchdog::pause() {
  std::lock_guard<std::mutex> lock(mutex_);
  ++paused_;
}

void StallWatchdog::resume() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (paused_ > 0) --paused_;
  measured_ = false;
  last_ = Clock::now();
  wake_.notify_all();
}

void StallWatchdog::watch() {
  std::unique_lock<std::mutex> lock(mutex_);
  while (!stop_) {
    if (!armed_ || paused_ > 0) {
      wake_.wait(lock);
      continue;
    }
    const double limit = stall_limit_seconds(option_, slowest_);
    const Clock::time_point deadline =
        last_ + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(limit));
    if (Clock::now() < deadline) {
      wake_.wait_until(lock, deadline);
      continue;
    }
    std::ostringstream line;
    line << "tls_dist: error: rank " << rank_ << ": no update finished in " << limit
         << " s (--stall-timeout); a peer rank or its node is probably lost, ending the job";
    lock.unlock();
    on_stall_(line.str());
    return;
  }
}

}  // namespace tls
