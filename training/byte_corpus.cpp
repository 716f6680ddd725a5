// The row-stream layout of docs/DESIGN.md section 4 over an mmap'ed byte file. Only the pages a
// rank touches are read from disk, so every rank can map the whole corpus.
#include "training/byte_corpus.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "kernels/error.h"

namespace tls {

MappedFile::MappedFile(const std::string& path) : path_(path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    throw Error("cannot open corpus '" + path + "': " + std::strerror(errno));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error("corpus '" + path + "' is not a regular file");
  }
  if (st.st_size == 0) {
    ::close(fd);
    throw Error("corpus '" + path + "' is empty");
  }
  void* map = ::mmap(nullptr, static_cast<size_t>(st.st_size), PROT_READ, MAP_PRIVATE, fd, 0);
  int map_errno = errno;
  ::close(fd);  // the mapping stays valid
  if (map == MAP_FAILED) {
    throw Error("cannot map corpus '" + path + "': " + std::strerror(map_errno));
  }
  data_ = static_cast<const unsigned char*>(map);
  size_ = static_cast<int64_t>(st.st_size);
}

MappedFile::~MappedFile() {
  if (data_ != nullptr) ::munmap(const_cast<unsigned char*>(data_), static_cast<size_t>(size_));
}

ByteCorpus::ByteCorpus(const std::string& path, int64_t batch_rows, int64_t tokens_per_sample)
    : file_(path), rows_(batch_rows), tokens_(tokens_per_sample) {
  if (rows_ <= 0) throw Error("--batch-size " + std::to_string(rows_) + " must be positive");
  if (tokens_ <= 0) {
    throw Error("--tokens-per-sample " + std::to_string(tokens_) + " must be positive");
  }
  row_len_ = file_.size() / rows_;
  if (row_len_ < tokens_ + 1) {
    throw Error("corpus '" + path + "' (" + std::to_string(file_.size()) +
                " bytes): --batch-size " + std::to_string(rows_) + " rows of " +
                std::to_string(row_len_) +
                " bytes each are shorter than one block of --tokens-per-sample " +
                std::to_string(tokens_) + " + 1");
  }
}

void ByteCorpus::batch(int64_t block_in_epoch, int64_t row_begin, int64_t row_count,
                       int64_t t_begin, int64_t t_count, std::vector<int32_t>& inputs,
                       std::vector<int32_t>& targets) const {
  if (block_in_epoch < 0 || block_in_epoch >= blocks_per_epoch() || row_begin < 0 ||
      row_count < 0 || row_begin + row_count > rows_ || t_begin < 0 || t_count < 0 ||
      t_begin + t_count > tokens_) {
    throw Error("corpus '" + path() + "': batch(block " + std::to_string(block_in_epoch) +
                ", rows " + std::to_string(row_begin) + "+" + std::to_string(row_count) +
                ", positions " + std::to_string(t_begin) + "+" + std::to_string(t_count) +
                ") is outside " + std::to_string(blocks_per_epoch()) + " blocks x " +
                std::to_string(rows_) + " rows x " + std::to_string(tokens_) + " positions");
  }
  inputs.resize(static_cast<size_t>(row_count * t_count));
  targets.resize(inputs.size());
  for (int64_t r = 0; r < row_count; ++r) {
    const unsigned char* src =
        file_.data() + (row_begin + r) * row_len_ + block_in_epoch * tokens_ + t_begin;
    int32_t* in = inputs.data() + r * t_count;
    int32_t* tg = targets.data() + r * t_count;
    for (int64_t t = 0; t < t_count; ++t) {
      in[t] = src[t];
      tg[t] = src[t + 1];
    }
  }
}

void ByteCorpus::batch(int64_t block_in_epoch, int64_t row_begin, int64_t row_count,
                       const std::vector<Segment>& segments, std::vector<int32_t>& inputs,
                       std::vector<int32_t>& targets) const {
  int64_t local = 0;
  for (const Segment& seg : segments) local += seg.n;
  inputs.assign(static_cast<size_t>(row_count * local), 0);
  targets.assign(inputs.size(), 0);
  std::vector<int32_t> in, tg;
  for (const Segment& seg : segments) {
    batch(block_in_epoch, row_begin, row_count, seg.t0, seg.n, in, tg);
    for (int64_t r = 0; r < row_count; ++r)
      for (int64_t t = 0; t < seg.n; ++t) {
        const size_t to = static_cast<size_t>(r * local + seg.row0 + t),
                     from = static_cast<size_t>(r * seg.n + t);
        inputs[to] = in[from];
        targets[to] = tg[from];
      }
  }
}

ByteStream::ByteStream(const std::string& path, int64_t tokens_per_sample)
    : file_(path), tokens_(tokens_per_sample) {
  if (tokens_ <= 0) {
    throw Error("--tokens-per-sample " + std::to_string(tokens_) + " must be positive");
  }
  if (file_.size() < 2) {
    throw Error("corpus '" + path + "' holds 1 byte: nothing to predict");
  }
}

int64_t ByteStream::block(int64_t i, std::vector<int32_t>& inputs,
                          std::vector<int32_t>& targets) const {
  if (i < 0 || i >= num_blocks()) {
    throw Error("corpus '" + path() + "': block " + std::to_string(i) + " is outside its " +
                std::to_string(num_blocks()) + " blocks");
  }
  int64_t begin = i * tokens_;
  int64_t length = std::min(tokens_, num_targets() - begin);
  inputs.resize(static_cast<size_t>(length));
  targets.resize(static_cast<size_t>(length));
  const unsigned char* src = file_.data() + begin;
  for (int64_t t = 0; t < length; ++t) {
    inputs[t] = src[t];
    targets[t] = src[t + 1];
  }
  return length;
}

int64_t ByteCorpus::digest() const {
  uint64_t h = 0xcbf29ce484222325ULL;
  const unsigned char* p = file_.data();
  for (int64_t i = 0; i < file_.size(); ++i) h = (h ^ p[i]) * 0x100000001b3ULL;
  return static_cast<int64_t>(h);
}

}  // namespace tls
