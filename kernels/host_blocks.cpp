#include "kernels/host_blocks.h"

#include <atomic>
#include <cstdlib>
#include <map>
#include <mutex>

namespace tls::host_blocks {
namespace {

// Trivially destructible, so blocks released during static destruction (after the cache is
// gone) still find out that they must go straight back to the system.
std::atomic<bool> closed{false};

class Cache {
 public:
  ~Cache() {
    closed = true;
    for (auto& [bytes, block] : kept_) std::free(block);
  }

  void* allocate(size_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      live_ += bytes;
      if (live_ > high_water_) high_water_ = live_;
      auto it = kept_.find(bytes);
      if (it != kept_.end()) {
        void* block = it->second;
        kept_.erase(it);
        kept_bytes_ -= bytes;
        ++reuses_;
        return block;
      }
      // Give back kept blocks (largest first) until live + kept fits under the high water.
      while (!kept_.empty() && live_ + kept_bytes_ > high_water_) {
        auto last = std::prev(kept_.end());
        std::free(last->second);
        kept_bytes_ -= last->first;
        kept_.erase(last);
      }
    }
    void* block = std::aligned_alloc(64, bytes);
    if (!block) {
      std::lock_guard<std::mutex> lock(mutex_);
      live_ -= bytes;
    }
    return block;
  }

  void release(void* block, size_t bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    live_ -= bytes;
    kept_.emplace(bytes, block);  // live + kept is unchanged, so still under the high water
    kept_bytes_ += bytes;
  }

  Stats stats() {
    std::lock_guard<std::mutex> lock(mutex_);
    return {static_cast<int64_t>(kept_bytes_), reuses_};
  }

 private:
  std::mutex mutex_;
  std::multimap<size_t, void*> kept_;
  size_t live_ = 0, kept_bytes_ = 0, high_water_ = 0;
  int64_t reuses_ = 0;
};

Cache& cache() {
  static Cache c;
  return c;
}

}  // namespace

void* allocate(size_t bytes) { return cache().allocate(bytes); }

void release(void* block, size_t bytes) {
  if (closed) {
    std::free(block);
    return;
  }
  cache().release(block, bytes);
}

Stats stats() { return closed ? Stats{} : cache().stats(); }

}  // namespace tls::host_blocks
