// One rank's part of a checkpoint (docs/DESIGN.md section 5): a serial HDF5 file that only this
// rank opens, holding this rank's block of every tensor it writes, under the tensor's reference
// name, shaped as the block. Written from the background save thread: no MPI, the sec2 driver.
//
// Every dataset is chunked with HDF5's Fletcher32 filter declared; the chunks go to disk through
// H5Dwrite_chunk with the checksum appended here (checkpoint/fletcher32.h), so HDF5's filtered
// write (a copy per chunk and a slow checksum) is skipped while every reader, h5py included,
// still verifies each chunk. A chunk is a run of whole trailing rows (contiguous in the block),
// about kChunkBytes, so it is cut straight out of the row-major data.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "checkpoint/hdf5_reader.h"
#include "kernels/tensor.h"

namespace tls {

class PartFileWriter {
 public:
  static constexpr size_t kChunkBytes = size_t{4} << 20;
  // Creates (truncates) `path`.
  explicit PartFileWriter(std::string path);
  ~PartFileWriter();  // an unclosed file is closed without checks (the caller deletes it)
  PartFileWriter(const PartFileWriter&) = delete;
  PartFileWriter& operator=(const PartFileWriter&) = delete;

  // A chunk of a block: `bytes` bytes of the data from byte `at`, stored as `stored` bytes (an
  // edge chunk is padded with zeros to the whole chunk).
  struct Chunk {
    size_t at = 0, bytes = 0, stored = 0;
  };
  // The chunks of a block in the order write() stores them.
  static std::vector<Chunk> chunks(DType type, const std::vector<int64_t>& shape);
  // The Fletcher32 checksum of one chunk as stored; pure, so it can run on another thread while
  // other chunks are written.
  static uint32_t chunk_checksum(const char* data, const Chunk& chunk);
  // Every chunk's checksum, in order.
  static std::vector<uint32_t> checksums(DType type, const std::vector<int64_t>& shape,
                                         const char* data);
  // Dataset `name` of `shape` holding `data` (row-major, elements of `type`: f32 or f64);
  // sum_of(i) gives the checksum of chunk i (asked in order, each once, just before the chunk is
  // written). The 4 bytes after each chunk take its checksum while it is written (then get their
  // values back), so `data` must have kSlackBytes writable bytes after its end and no other thread
  // may read them meanwhile.
  static constexpr size_t kSlackBytes = 4;
  void write(const std::string& name, DType type, const std::vector<int64_t>& shape, char* data,
             const std::function<uint32_t(size_t)>& sum_of);
  // The same with the checksums given.
  void write(const std::string& name, DType type, const std::vector<int64_t>& shape, char* data,
             const std::vector<uint32_t>& sums);
  // The same for data staged chunk by chunk (a tensor training still reads, whose neighbouring
  // bytes are not the writer's; ChunkChecksums stages it): chunk_of(i), asked in order, each
  // once, gives chunk i's stored bytes (zero-padded) with kSlackBytes writable bytes after
  // them, and its checksum. The dataset must be chunked (rank >= 1, not empty).
  struct StagedChunk {
    char* data = nullptr;
    uint32_t sum = 0;
  };
  void write_staged(const std::string& name, DType type, const std::vector<int64_t>& shape,
                    const std::function<StagedChunk(size_t)>& chunk_of);
  // Flushes, closes and fsyncs the file: once this returns the part is durable.
  void close();
  const std::string& path() const { return path_; }

 private:
  void check(herr_t status, const std::string& what) const;
  // Creates dataset `name`; `chunked` tells whether its values go in chunks (else in one write).
  Hdf5Handle create_dataset(const std::string& name, DType type, const std::vector<int64_t>& shape,
                            bool& chunked);
  std::string path_;
  Hdf5Handle file_;
  std::vector<char> chunk_;  // one chunk and its checksum, for the edge chunk
};

// The chunk shape PartFileWriter uses for a block of `shape` (exposed for tests).
std::vector<int64_t> part_chunk_shape(const std::vector<int64_t>& shape, size_t element_bytes);

}  // namespace tls
