// The checksums of a part's chunks, computed on a thread of their own just ahead of the writer
// (docs/DESIGN.md section 5). The checksum thread reads each chunk from memory; running at most
// kAhead chunks ahead keeps those chunks in the CPU's cache for the write() that copies them
// into the page cache next, so the data crosses the memory bus about once, as a plain write's
// does, and the checksum's work overlaps the write's. A chunk the writer needs that the thread
// has not started (the scheduler did not run it) is summed by the writer itself. A block that
// may not be written next to (a held cache) is staged chunk by chunk on the same thread.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "checkpoint/part_file.h"

namespace tls {

class ChunkChecksums {
 public:
  static constexpr size_t kAhead = 2;
  // Copies `bytes` bytes of a block's row-major data from byte `at` into `out`.
  using Fill = std::function<void(size_t at, size_t bytes, char* out)>;
  struct Block {
    const char* data = nullptr;
    DType type = DType::f32;
    std::vector<int64_t> shape;
    // Set for data whose neighbouring bytes are not the writer's (a tensor training still
    // reads): each chunk is then staged by fill() in a buffer of this object's, zero-padded to
    // its stored size, and summed there; staged() hands that buffer to the writer. `data` is
    // unused.
    Fill fill;
  };
  // Starts computing the checksums of every chunk of `blocks`, in order. The data must stay
  // unchanged until this object is destroyed, but for what PartFileWriter does to it: writing
  // chunk i puts its checksum over the first 4 bytes of chunk i + 1 for a moment, so get(i)
  // returns only once chunk i + 1 is summed too.
  explicit ChunkChecksums(std::vector<Block> blocks);
  ~ChunkChecksums();  // stops the thread, even mid-way (a write failed)
  ChunkChecksums(const ChunkChecksums&) = delete;
  ChunkChecksums& operator=(const ChunkChecksums&) = delete;

  // The checksum of chunk `chunk` of block `block` (PartFileWriter::chunks order); waits for it.
  // Asked in order: chunks before it are taken to be written, and the next one is summed too.
  uint32_t get(size_t block, size_t chunk);
  // A staged block's chunk after get(block, chunk): its stored bytes with 4 writable bytes after
  // them, the writer's until it asks for a later chunk.
  char* staged(size_t block, size_t chunk);

 private:
  struct Place {
    size_t block = 0;
    PartFileWriter::Chunk chunk;
  };
  void run();
  // Takes the next unclaimed chunk if it is below `limit`.
  bool claim(size_t& chunk, size_t limit);
  void compute(size_t chunk);
  // Staging buffers, used round-robin: chunk k's is reused by chunk k + kSlots, summed only once
  // the writer has asked for chunk k + kSlots - kAhead, so after chunk k is written.
  static constexpr size_t kSlots = kAhead + 2;
  std::vector<std::vector<char>> slots_;
  std::vector<Block> blocks_;
  std::vector<Place> places_;  // every chunk, flat
  std::vector<size_t> first_;  // flat index of each block's first chunk
  std::vector<uint32_t> sums_;
  std::unique_ptr<std::atomic<bool>[]> done_;
  std::atomic<size_t> next_{0};  // the next chunk to claim
  std::mutex mutex_;
  std::condition_variable changed_;
  size_t wanted_ = 0;  // the chunk the writer asked for last
  bool stop_ = false;
  std::exception_ptr error_;
  std::thread thread_;
};

}  // namespace tls
