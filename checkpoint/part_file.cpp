// PartFileWriter over HDF5's C API (1.8 file format, like version-1 checkpoints).
#include "checkpoint/part_file.h"

#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "checkpoint/durable_files.h"
#include "checkpoint/fletcher32.h"
#include "kernels/error.h"

namespace tls {

namespace {

int64_t chunk_budget(size_t element_bytes) {
  return std::max<int64_t>(1, static_cast<int64_t>(PartFileWriter::kChunkBytes / element_bytes));
}

// The dimension cut into runs of rows: the first from the left whose rows fit the budget.
size_t cut_dimension(const std::vector<int64_t>& shape, size_t element_bytes) {
  int64_t rest = 1;
  for (int64_t d : shape) rest *= std::max<int64_t>(1, d);
  for (size_t i = 0; i < shape.size(); ++i) {
    rest /= std::max<int64_t>(1, shape[i]);  // elements of one row of dimension i
    if (rest <= chunk_budget(element_bytes)) return i;
  }
  return 0;
}

}  // namespace

std::vector<int64_t> part_chunk_shape(const std::vector<int64_t>& shape, size_t element_bytes) {
  // [1, ..., 1, k, whole trailing dims]: contiguous in the row-major block.
  std::vector<int64_t> chunk(shape.size(), 1);
  if (shape.empty()) return chunk;
  const size_t cut = cut_dimension(shape, element_bytes);
  int64_t row = 1;
  for (size_t j = cut + 1; j < shape.size(); ++j) {
    chunk[j] = std::max<int64_t>(1, shape[j]);
    row *= chunk[j];
  }
  chunk[cut] =
      std::clamp<int64_t>(chunk_budget(element_bytes) / row, 1, std::max<int64_t>(1, shape[cut]));
  return chunk;
}

PartFileWriter::PartFileWriter(std::string path) : path_(std::move(path)) {
  QuietHdf5 quiet;
  Hdf5Handle fapl(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
  check(H5Pset_libver_bounds(fapl.get(), H5F_LIBVER_V18, H5F_LIBVER_V18), "set the file format");
  check(H5Pset_fapl_sec2(fapl.get()), "use the POSIX driver");
  file_ = Hdf5Handle(H5Fcreate(path_.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl.get()), H5Fclose);
  if (!file_.valid())
    throw Error("cannot create checkpoint part '" + path_ + "' (" + hdf5_error_detail() + ")");
}

PartFileWriter::~PartFileWriter() {
  if (!file_.valid()) return;
  // After a failure: emptying the file first gives a full disk back the space the close needs
  // to flush HDF5's metadata (a failed close leaves the library unable to shut down cleanly).
  [[maybe_unused]] const int status = ::truncate(path_.c_str(), 0);
  QuietHdf5 quiet;
  file_.reset();
}

void PartFileWriter::check(herr_t status, const std::string& what) const {
  if (status >= 0) return;
  const std::string detail = hdf5_error_detail();
  const std::string dir = directory_of(path_);
  const int64_t free = free_bytes(dir);
  const bool full = free >= 0 && free < (int64_t{1} << 20);
  throw Error("checkpoint part '" + path_ + "': cannot " + what +
              (detail.empty() ? "" : " (" + detail + ")") +
              (full ? "; the file system holding '" + dir + "' is full (" +
                          std::to_string(free / 1024) + " KiB free)"
                    : ""));
}

namespace {

// The chunks of a block in file order: each one's byte offset in the data, its bytes (less than
// `chunk_bytes` for an edge chunk) and its offset in the dataset. Chunks are
// [1, ..., 1, k, whole trailing dims], so each is one contiguous run of the data.
struct ChunkPlace {
  size_t at = 0, bytes = 0;
  std::vector<hsize_t> offset;
};

std::vector<ChunkPlace> chunk_places(const std::vector<int64_t>& shape, size_t element,
                                     size_t& chunk_bytes) {
  const std::vector<int64_t> chunk = part_chunk_shape(shape, element);
  const size_t cut = cut_dimension(shape, element);
  int64_t row = 1, total = 1;  // row: elements of one row of the cut dimension
  for (size_t j = cut + 1; j < shape.size(); ++j) row *= shape[j];
  for (int64_t d : shape) total *= d;
  chunk_bytes = static_cast<size_t>(chunk[cut] * row) * element;
  std::vector<ChunkPlace> places;
  const int64_t outer = total / (shape[cut] * row);  // rows of the dimensions before `cut`
  for (int64_t o = 0; o < outer; ++o) {
    std::vector<hsize_t> offset(shape.size(), 0);
    int64_t rest = o;
    for (size_t i = cut; i-- > 0;) {
      offset[i] = static_cast<hsize_t>(rest % shape[i]);
      rest /= shape[i];
    }
    for (int64_t k = 0; k < shape[cut]; k += chunk[cut]) {
      offset[cut] = static_cast<hsize_t>(k);
      places.push_back({static_cast<size_t>((o * shape[cut] + k) * row) * element,
                        static_cast<size_t>(std::min(chunk[cut], shape[cut] - k) * row) * element,
                        offset});
    }
  }
  return places;
}

hid_t file_type_of(DType type) { return type == DType::f64 ? H5T_IEEE_F64LE : H5T_IEEE_F32LE; }

int64_t element_count(const std::vector<int64_t>& shape) {
  int64_t total = 1;
  for (int64_t d : shape) total *= d;
  return total;
}

// HDF5's Fletcher32 filter stores the checksum after the chunk, least significant byte first.
void put_checksum(uint32_t sum, char* out) {
  for (int b = 0; b < 4; ++b) out[b] = static_cast<char>((sum >> (8 * b)) & 0xff);
}

}  // namespace

std::vector<PartFileWriter::Chunk> PartFileWriter::chunks(DType type,
                                                          const std::vector<int64_t>& shape) {
  int64_t total = 1;
  for (int64_t d : shape) total *= d;
  if (shape.empty() || total == 0) return {};
  size_t chunk_bytes = 0;
  std::vector<Chunk> out;
  for (const ChunkPlace& c : chunk_places(shape, dtype_size(type), chunk_bytes))
    out.push_back({c.at, c.bytes, chunk_bytes});
  return out;
}

uint32_t PartFileWriter::chunk_checksum(const char* data, const Chunk& chunk) {
  if (chunk.bytes == chunk.stored) return fletcher32(data + chunk.at, chunk.bytes);
  std::vector<char> padded(chunk.stored, 0);  // an edge chunk is stored padded with zeros
  std::memcpy(padded.data(), data + chunk.at, chunk.bytes);
  return fletcher32(padded.data(), chunk.stored);
}

std::vector<uint32_t> PartFileWriter::checksums(DType type, const std::vector<int64_t>& shape,
                                                const char* data) {
  std::vector<uint32_t> sums;
  for (const Chunk& c : chunks(type, shape)) sums.push_back(chunk_checksum(data, c));
  return sums;
}

void PartFileWriter::write(const std::string& name, DType type, const std::vector<int64_t>& shape,
                           char* data, const std::vector<uint32_t>& sums) {
  const size_t n = chunks(type, shape).size();
  if (sums.size() != n)
    throw Error("checkpoint part '" + path_ + "': write dataset '" + name + "': " +
                std::to_string(sums.size()) + " checksums for " + std::to_string(n) + " chunks");
  write(name, type, shape, data, [&](size_t i) { return sums[i]; });
}

Hdf5Handle PartFileWriter::create_dataset(const std::string& name, DType type,
                                          const std::vector<int64_t>& shape, bool& chunked) {
  const std::string what = "write dataset '" + name + "'";
  const size_t element = dtype_size(type);
  const int rank = static_cast<int>(shape.size());
  int64_t total = 1;
  for (int64_t d : shape) total *= d;
  const std::vector<hsize_t> dims(shape.begin(), shape.end());
  Hdf5Handle space(rank == 0 ? H5Screate(H5S_SCALAR) : H5Screate_simple(rank, dims.data(), nullptr),
                   H5Sclose);
  Hdf5Handle lcpl(H5Pcreate(H5P_LINK_CREATE), H5Pclose);
  check(H5Pset_create_intermediate_group(lcpl.get(), 1), what);
  Hdf5Handle dcpl(H5Pcreate(H5P_DATASET_CREATE), H5Pclose);
  chunked = rank > 0 && total > 0;
  if (chunked) {
    const std::vector<int64_t> chunk = part_chunk_shape(shape, element);
    const std::vector<hsize_t> c(chunk.begin(), chunk.end());
    check(H5Pset_chunk(dcpl.get(), rank, c.data()), what + " (chunking)");
    check(H5Pset_fletcher32(dcpl.get()), what + " (checksum)");
    check(H5Pset_fill_time(dcpl.get(), H5D_FILL_TIME_NEVER), what + " (fill)");
    check(H5Pset_alloc_time(dcpl.get(), H5D_ALLOC_TIME_INCR), what + " (allocation)");
  }
  Hdf5Handle dataset(H5Dcreate2(file_.get(), name.c_str(), file_type_of(type), space.get(),
                                lcpl.get(), dcpl.get(), H5P_DEFAULT),
                     H5Dclose);
  check(dataset.valid() ? 0 : -1, what);
  return dataset;
}

void PartFileWriter::write(const std::string& name, DType type, const std::vector<int64_t>& shape,
                           char* data, const std::function<uint32_t(size_t)>& sum_of) {
  QuietHdf5 quiet;
  const std::string what = "write dataset '" + name + "'";
  bool chunked = false;
  Hdf5Handle dataset = create_dataset(name, type, shape, chunked);
  if (!chunked) {
    if (element_count(shape) > 0)
      check(H5Dwrite(dataset.get(), file_type_of(type), H5S_ALL, H5S_ALL, H5P_DEFAULT, data), what);
    return;
  }
  size_t chunk_bytes = 0;
  const std::vector<ChunkPlace> places = chunk_places(shape, dtype_size(type), chunk_bytes);
  for (size_t i = 0; i < places.size(); ++i) {
    const uint32_t sum = sum_of(i);
    char* chunk_data = data + places[i].at;
    if (places[i].bytes < chunk_bytes) {
      chunk_.assign(chunk_bytes + 4, 0);
      std::memcpy(chunk_.data(), chunk_data, places[i].bytes);
      chunk_data = chunk_.data();
    }
    // The checksum goes right after the chunk's data, over 4 bytes saved and put back after.
    char* tail = chunk_data + chunk_bytes;
    char saved[4];
    std::memcpy(saved, tail, 4);
    put_checksum(sum, tail);
    const herr_t status = H5Dwrite_chunk(dataset.get(), H5P_DEFAULT, 0, places[i].offset.data(),
                                         chunk_bytes + 4, chunk_data);
    std::memcpy(tail, saved, 4);
    check(status, what);
  }
}

void PartFileWriter::write_staged(const std::string& name, DType type,
                                  const std::vector<int64_t>& shape,
                                  const std::function<StagedChunk(size_t)>& chunk_of) {
  QuietHdf5 quiet;
  const std::string what = "write dataset '" + name + "'";
  bool chunked = false;
  Hdf5Handle dataset = create_dataset(name, type, shape, chunked);
  if (!chunked) {
    if (element_count(shape) > 0)
      throw Error("checkpoint part '" + path_ + "': " + what + ": a staged write needs chunks");
    return;
  }
  size_t chunk_bytes = 0;
  const std::vector<ChunkPlace> places = chunk_places(shape, dtype_size(type), chunk_bytes);
  for (size_t i = 0; i < places.size(); ++i) {
    const StagedChunk chunk = chunk_of(i);
    put_checksum(chunk.sum, chunk.data + chunk_bytes);
    check(H5Dwrite_chunk(dataset.get(), H5P_DEFAULT, 0, places[i].offset.data(), chunk_bytes + 4,
                         chunk.data),
          what);
  }
}

void PartFileWriter::close() {
  QuietHdf5 quiet;
  check(H5Fflush(file_.get(), H5F_SCOPE_GLOBAL), "flush");
  check(H5Fclose(file_.release()), "close");
  fsync_file(path_);
}

}  // namespace tls
