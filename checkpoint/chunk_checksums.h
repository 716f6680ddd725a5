// The checksums of a part's chunks, computed on a thread of their own just ahead of the writer
// (docs/DESIGN.md section 5). The checksum thread reads each chunk from memory; running at most
// kAhead chunks ahead keeps those chunks in the CPU's cache for the write() that copies them
// into the page cache next, so the data crosses the memory bus about once, as a plain write's
// does, and the checksum's work overlaps the write's.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "checkpoint/part_file.h"

namespace tls {

class ChunkChecksums {
 public:
  static constexpr size_t kAhead = 2;
  struct Block {
    const char* data = nullptr;
    DType type = DType::f32;
    std::vector<int64_t> shape;
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

 private:
  void run();
  std::vector<Block> blocks_;
  std::vector<std::vector<PartFileWriter::Chunk>> chunks_;
  std::vector<size_t> first_;  // flat index of each block's first chunk
  std::vector<uint32_t> sums_;
  std::mutex mutex_;
  std::condition_variable changed_;
  size_t computed_ = 0, wanted_ = 0;  // flat indices
  bool stop_ = false;
  std::exception_ptr error_;
  std::thread thread_;
};

}  // namespace tls
