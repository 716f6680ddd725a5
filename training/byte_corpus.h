// Byte-corpus data streams (docs/DESIGN.md section 4). A corpus is a raw byte file, memory-mapped
// read-only (never loaded whole: enwik8 is 100 MB, and every rank maps the same file).
//
// ByteCorpus (training): N bytes cut into B_global contiguous rows of n = floor(N / B_global)
// bytes. Block i of an epoch is block i of every row: inputs row[iT .. iT+T), targets
// row[iT+1 .. iT+T+1). An epoch has floor((n-1) / T) blocks; an update reads --update-freq
// consecutive ones (training/trainer.h). The position is a pure function of the update number,
// so resuming needs only that number.
//
// ByteStream (evaluation, B = 1): block i has inputs b[iT .. iT+T) and targets b[iT+1 ..
// iT+T+1); every byte after the first is predicted exactly once, so the last block may be short.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "parallel/sequence_layout.h"

namespace tls {

// A read-only memory map of a whole file. Throws tls::Error naming the file if it is missing,
// unreadable or empty.
class MappedFile {
 public:
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const std::string& path() const { return path_; }
  const unsigned char* data() const { return data_; }
  int64_t size() const { return size_; }

 private:
  std::string path_;
  const unsigned char* data_ = nullptr;
  int64_t size_ = 0;
};

class ByteCorpus {
 public:
  // Throws if the file is missing or empty, or if a row is shorter than one block plus its
  // final target (n < T + 1).
  ByteCorpus(const std::string& path, int64_t batch_rows, int64_t tokens_per_sample);

  const std::string& path() const { return file_.path(); }
  int64_t size() const { return file_.size(); }          // N
  int64_t rows() const { return rows_; }                 // B_global
  int64_t row_len() const { return row_len_; }           // n
  int64_t tokens_per_sample() const { return tokens_; }  // T
  int64_t blocks_per_epoch() const { return (row_len_ - 1) / tokens_; }
  // FNV-1a over every byte of the file (as an int64 bit pattern): a resumed run checks that its
  // corpus is the one the checkpoint was trained on.
  int64_t digest() const;

  // Rows [row_begin, row_begin + row_count) of block `block_in_epoch`, block positions
  // [t_begin, t_begin + t_count) (a sequence-parallel slice, or the whole block). Fills
  // inputs/targets row-major, [row_count, t_count], with the byte values 0..255.
  void batch(int64_t block_in_epoch, int64_t row_begin, int64_t row_count, int64_t t_begin,
             int64_t t_count, std::vector<int32_t>& inputs, std::vector<int32_t>& targets) const;
  // The same for a rank's runs of positions (parallel/sequence_layout.h), in their order:
  // [row_count, sum of the runs' lengths].
  void batch(int64_t block_in_epoch, int64_t row_begin, int64_t row_count,
             const std::vector<Segment>& segments, std::vector<int32_t>& inputs,
             std::vector<int32_t>& targets) const;

 private:
  MappedFile file_;
  int64_t rows_;
  int64_t tokens_;
  int64_t row_len_;
};

class ByteStream {
 public:
  // Throws if the file is missing or holds fewer than 2 bytes (nothing to predict).
  ByteStream(const std::string& path, int64_t tokens_per_sample);

  const std::string& path() const { return file_.path(); }
  int64_t size() const { return file_.size(); }
  int64_t num_blocks() const { return (file_.size() - 1 + tokens_ - 1) / tokens_; }
  int64_t num_targets() const { return file_.size() - 1; }  // bytes predicted in all

  // Block i: resizes inputs and targets to the block's real length L (T, or less for the last
  // block) and returns L. The caller pads to a valid length; only the L targets count.
  int64_t block(int64_t i, std::vector<int32_t>& inputs, std::vector<int32_t>& targets) const;

 private:
  MappedFile file_;
  int64_t tokens_;
};

}  // namespace tls
