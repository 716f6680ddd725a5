// ChunkChecksums: one thread, a bounded lead over the writer.
#include "checkpoint/chunk_checksums.h"

#include <algorithm>

namespace tls {

ChunkChecksums::ChunkChecksums(std::vector<Block> blocks) : blocks_(std::move(blocks)) {
  size_t total = 0;
  for (const Block& b : blocks_) {
    first_.push_back(total);
    chunks_.push_back(PartFileWriter::chunks(b.type, b.shape));
    total += chunks_.back().size();
  }
  sums_.resize(total);
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

void ChunkChecksums::run() {
  size_t flat = 0;
  try {
    for (size_t b = 0; b < blocks_.size(); ++b) {
      for (const PartFileWriter::Chunk& c : chunks_[b]) {
        {
          std::unique_lock<std::mutex> lock(mutex_);
          changed_.wait(lock, [&] { return stop_ || flat <= wanted_ + kAhead; });
          if (stop_) return;
        }
        const uint32_t sum = PartFileWriter::chunk_checksum(blocks_[b].data, c);
        {
          std::lock_guard<std::mutex> lock(mutex_);
          sums_[flat] = sum;
          computed_ = ++flat;
        }
        changed_.notify_all();
      }
    }
  } catch (...) {
    std::lock_guard<std::mutex> lock(mutex_);
    error_ = std::current_exception();
    changed_.notify_all();
  }
}

uint32_t ChunkChecksums::get(size_t block, size_t chunk) {
  const size_t flat = first_.at(block) + chunk;
  std::unique_lock<std::mutex> lock(mutex_);
  wanted_ = flat;
  changed_.notify_all();
  // Chunk flat + 1 too: writing this chunk overwrites its first bytes for a moment.
  const size_t need = std::min(flat + 2, sums_.size());
  changed_.wait(lock, [&] { return computed_ >= need || error_ != nullptr; });
  if (computed_ < need) std::rethrow_exception(error_);
  return sums_.at(flat);
}

}  // namespace tls
