// ChunkChecksums: chunks are claimed in order from one counter, by the checksum thread (at most
// kAhead ahead of the writer) or by the writer itself when the chunk it needs is unclaimed, so a
// checksum thread that the scheduler does not run (a loaded machine) never stalls the writes.
#include "checkpoint/chunk_checksums.h"

#include <algorithm>
#include <cstring>

#include "checkpoint/fletcher32.h"

namespace tls {

ChunkChecksums::ChunkChecksums(std::vector<Block> blocks) : blocks_(std::move(blocks)) {
  for (size_t b = 0; b < blocks_.size(); ++b) {
    first_.push_back(places_.size());
    for (const PartFileWriter::Chunk& c : PartFileWriter::chunks(blocks_[b].type, blocks_[b].shape))
      places_.push_back({b, c});
  }
  size_t staged_bytes = 0;  // the largest staged chunk, as stored
  for (const Place& p : places_)
    if (blocks_[p.block].fill) staged_bytes = std::max(staged_bytes, p.chunk.stored);
  if (staged_bytes > 0)
    slots_.assign(kSlots, std::vector<char>(staged_bytes + PartFileWriter::kSlackBytes));
  sums_.resize(places_.size());
  done_ = std::make_unique<std::atomic<bool>[]>(places_.size());
  thread_ = std::thread([this] { run(); });
}

ChunkChecksums::~ChunkChecksums() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  changed_.notify_all();
  thread_.join();
}

bool ChunkChecksums::claim(size_t& chunk, size_t limit) {
  size_t next = next_.load();
  while (next < limit) {
    if (next_.compare_exchange_weak(next, next + 1)) {
      chunk = next;
      return true;
    }
  }
  return false;
}

void ChunkChecksums::compute(size_t chunk) {
  try {
    const Place& p = places_[chunk];
    const Block& b = blocks_[p.block];
    if (b.fill) {
      char* slot = slots_[chunk % kSlots].data();
      b.fill(p.chunk.at, p.chunk.bytes, slot);
      std::memset(slot + p.chunk.bytes, 0, p.chunk.stored - p.chunk.bytes);
      sums_[chunk] = fletcher32(slot, p.chunk.stored);
    } else {
      sums_[chunk] = PartFileWriter::chunk_checksum(b.data, p.chunk);
    }
    done_[chunk].store(true, std::memory_order_release);
  } catch (...) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (error_ == nullptr) error_ = std::current_exception();
  }
  { std::lock_guard<std::mutex> lock(mutex_); }  // a waiter between its check and its wait
  changed_.notify_all();
}

void ChunkChecksums::run() {
  for (;;) {
    size_t limit = 0;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      changed_.wait(lock, [&] {
        return stop_ || error_ != nullptr || next_.load() >= places_.size() ||
               next_.load() <= wanted_ + kAhead;
      });
      if (stop_ || error_ != nullptr || next_.load() >= places_.size()) return;
      limit = std::min(wanted_ + kAhead + 1, places_.size());
    }
    size_t chunk = 0;
    while (claim(chunk, limit)) compute(chunk);
  }
}

char* ChunkChecksums::staged(size_t block, size_t chunk) {
  return slots_.at((first_.at(block) + chunk) % kSlots).data();
}

uint32_t ChunkChecksums::get(size_t block, size_t chunk) {
  const size_t flat = first_.at(block) + chunk;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    wanted_ = flat;
  }
  changed_.notify_all();
  // Chunk flat + 1 too: writing this chunk overwrites its first bytes for a moment.
  const size_t need = std::min(flat + 2, places_.size());
  for (size_t k = flat; k < need; ++k) {
    size_t mine = 0;
    while (!done_[k].load(std::memory_order_acquire) && claim(mine, k + 1)) compute(mine);
    std::unique_lock<std::mutex> lock(mutex_);  // chunk k is being summed by the thread
    changed_.wait(lock, [&] { return done_[k].load() || error_ != nullptr; });
    if (!done_[k].load()) std::rethrow_exception(error_);
  }
  return sums_[flat];
}

}  // namespace tls
