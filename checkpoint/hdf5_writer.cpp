// Hdf5Writer over the HDF5 C API. Files use the 1.8 format (superblock and object headers with
// their own checksums; readable by every HDF5 >= 1.8 tool). Datasets: chunked, Fletcher32, no
// fill values (every element is written by some rank).
#include "checkpoint/hdf5_writer.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <thread>

#include "checkpoint/durable_files.h"
#include "kernels/error.h"

namespace tls {
namespace {

hid_t hdf5_type(DType t, bool in_file) {
  switch (t) {
    case DType::f32:
      return in_file ? H5T_IEEE_F32LE : H5T_NATIVE_FLOAT;
    case DType::f64:
      return in_file ? H5T_IEEE_F64LE : H5T_NATIVE_DOUBLE;
    case DType::i32:
      return in_file ? H5T_STD_I32LE : H5T_NATIVE_INT32;
    case DType::bf16:  // activations only; checkpoints hold float32 and float64
      throw Error("checkpoint: bfloat16 tensors are never written");
  }
  return H5T_NATIVE_DOUBLE;
}

// Chunk dimensions of at most about `bytes` that divide `block` exactly (so the chunk grid
// lines up with the blocks of every rank): leading dimensions shrink first, so a chunk is a run
// of whole trailing rows where possible.
std::vector<hsize_t> chunk_dims(const std::vector<int64_t>& block, size_t element, size_t bytes) {
  std::vector<hsize_t> chunk(block.size());
  int64_t budget = std::max<int64_t>(1, static_cast<int64_t>(bytes / element));
  for (size_t i = 0; i < block.size(); ++i) {
    int64_t rest = 1;
    for (size_t j = i + 1; j < block.size(); ++j) rest *= std::max<int64_t>(1, block[j]);
    const int64_t dim = std::max<int64_t>(1, block[i]);
    int64_t n = std::clamp<int64_t>(budget / rest, 1, dim);
    while (dim % n != 0) --n;  // the largest divisor of dim that fits
    chunk[i] = static_cast<hsize_t>(n);
    budget = n < dim ? rest : budget / n;  // a cut dimension leaves one row's budget
  }
  return chunk;
}

}  // namespace

Hdf5Writer::Hdf5Writer(std::string path, MPI_Comm comm, size_t chunk_bytes)
    : path_(std::move(path)),
      comm_(comm),
      parallel_(comm != MPI_COMM_NULL),
      chunk_bytes_(chunk_bytes) {
  collective_step([&] {
    QuietHdf5 quiet;
    Hdf5Handle fapl(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
    // Objects in the 1.8 format; virtual datasets (the 1.10 format) where a file has them.
    check(H5Pset_libver_bounds(fapl.get(), H5F_LIBVER_V18, H5F_LIBVER_V110), "set the file format");
    if (parallel_) {
      check(H5Pset_fapl_mpio(fapl.get(), comm_, MPI_INFO_NULL), "use MPI-IO");
      check(H5Pset_coll_metadata_write(fapl.get(), true), "use collective metadata writes");
    }
    file_ = Hdf5Handle(H5Fcreate(path_.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl.get()), H5Fclose);
    if (!file_.valid()) {
      throw Error("cannot create checkpoint file '" + path_ + "' (" + hdf5_error_detail() + ")");
    }
  });
}

Hdf5Writer::~Hdf5Writer() {
  if (!file_.valid()) return;
  // Reached after a failure on some rank (every rank agreed on it) or an exception outside the
  // writer. Emptying the file first frees what a full disk needs for the metadata flush.
  int rank = 0;
  if (parallel_) MPI_Comm_rank(comm_, &rank);
  if (rank == 0) {
    [[maybe_unused]] const int status = ::truncate(path_.c_str(), 0);  // the close reports
  }
  if (parallel_) MPI_Barrier(comm_);
  QuietHdf5 quiet;
  file_.reset();
}

template <class F>
void Hdf5Writer::collective_step(F&& f) {
  if (failed_) throw Error("checkpoint file '" + path_ + "': written after a failure");
  std::string error;
  try {
    f();
  } catch (const std::exception& e) {
    error = e.what();
  }
  agree(error);
}

void Hdf5Writer::agree(const std::string& local_error) {
  if (!parallel_) {
    if (local_error.empty()) return;
    failed_ = true;
    throw Error(local_error);
  }
  int rank = 0, size = 1;
  MPI_Comm_rank(comm_, &rank);
  MPI_Comm_size(comm_, &size);
  int lowest = local_error.empty() ? size : rank;
  MPI_Request request;
  MPI_Iallreduce(MPI_IN_PLACE, &lowest, 1, MPI_INT, MPI_MIN, comm_, &request);
  if (local_error.empty()) {
    MPI_Wait(&request, MPI_STATUS_IGNORE);
  } else {
    wait_or_end_the_job(request, local_error);
  }
  if (lowest == size) return;
  failed_ = true;
  std::string message = local_error;
  int length = static_cast<int>(message.size());
  MPI_Bcast(&length, 1, MPI_INT, lowest, comm_);
  message.resize(static_cast<size_t>(length));
  MPI_Bcast(message.data(), length, MPI_CHAR, lowest, comm_);
  throw Error(lowest == rank ? message : "rank " + std::to_string(lowest) + ": " + message);
}

void Hdf5Writer::wait_or_end_the_job(MPI_Request& request, const std::string& error) {
  using Clock = std::chrono::steady_clock;
  const Clock::time_point deadline = Clock::now() + std::chrono::seconds(kAgreementSeconds);
  int done = 0;
  while (MPI_Test(&request, &done, MPI_STATUS_IGNORE) == MPI_SUCCESS && done == 0) {
    if (Clock::now() > deadline) {
      // HDF5's collectives do not survive a failure on one rank: the others wait inside the
      // library for this one. Nothing can be completed; delete the file and end the job.
      int rank = 0;
      MPI_Comm_rank(comm_, &rank);
      std::fprintf(stderr,
                   "tls_dist: error: rank %d: %s (the other ranks are blocked inside "
                   "HDF5's collective write; ending the job)\n",
                   rank, error.c_str());
      std::fflush(stderr);
      ::unlink(path_.c_str());
      MPI_Abort(MPI_COMM_WORLD, 1);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

void Hdf5Writer::check(herr_t status, const std::string& what) const {
  if (status >= 0) return;
  std::string detail = hdf5_error_detail();
  // HDF5 says only "file write failed"; a full file system is the usual reason, so say so.
  const std::string dir = directory_of(path_);
  const int64_t free = free_bytes(dir);
  const bool full = free >= 0 && free < (int64_t{1} << 20);
  throw Error("checkpoint file '" + path_ + "': cannot " + what +
              (detail.empty() ? "" : " (" + detail + ")") +
              (full ? "; the file system holding '" + dir + "' is full (" +
                          std::to_string(free / 1024) + " KiB free)"
                    : ""));
}

void Hdf5Writer::group(const std::string& path) {
  collective_step([&] {
    QuietHdf5 quiet;
    Hdf5Handle g(H5Gcreate2(file_.get(), path.c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
                 H5Gclose);
    check(g.valid() ? 0 : -1, "create group '" + path + "'");
  });
}

void Hdf5Writer::write_attribute(const std::string& object, const std::string& name,
                                 hid_t file_type, hid_t mem_type, const void* value) {
  collective_step([&] { write_attribute_here(object, name, file_type, mem_type, value); });
}

void Hdf5Writer::write_attribute_here(const std::string& object, const std::string& name,
                                      hid_t file_type, hid_t mem_type, const void* value) {
  QuietHdf5 quiet;
  Hdf5Handle space(H5Screate(H5S_SCALAR), H5Sclose);
  Hdf5Handle attr(H5Acreate_by_name(file_.get(), object.c_str(), name.c_str(), file_type,
                                    space.get(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
                  H5Aclose);
  const std::string what = "write attribute '" + name + "' on '" + object + "'";
  check(attr.valid() ? 0 : -1, what);
  check(H5Awrite(attr.get(), mem_type, value), what);
}

void Hdf5Writer::attribute(const std::string& object, const std::string& name, int64_t value) {
  write_attribute(object, name, H5T_STD_I64LE, H5T_NATIVE_INT64, &value);
}

void Hdf5Writer::attribute(const std::string& object, const std::string& name, double value) {
  write_attribute(object, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &value);
}

void Hdf5Writer::attribute(const std::string& object, const std::string& name,
                           const std::string& value) {
  QuietHdf5 quiet;
  Hdf5Handle type(H5Tcopy(H5T_C_S1), H5Tclose);
  H5Tset_size(type.get(), std::max<size_t>(1, value.size()));
  H5Tset_strpad(type.get(), H5T_STR_NULLPAD);
  H5Tset_cset(type.get(), H5T_CSET_ASCII);
  std::string padded = value.empty() ? std::string(1, '\0') : value;
  write_attribute(object, name, type.get(), type.get(), padded.data());
}

void Hdf5Writer::write(const std::string& path, DType file_type, const std::vector<int64_t>& shape,
                       const std::vector<int64_t>& start, const std::vector<int64_t>& count,
                       DType mem_type, const void* data) {
  collective_step([&] { write_here(path, file_type, shape, start, count, mem_type, data); });
}

void Hdf5Writer::write_here(const std::string& path, DType file_type,
                            const std::vector<int64_t>& shape, const std::vector<int64_t>& start,
                            const std::vector<int64_t>& count, DType mem_type, const void* data) {
  QuietHdf5 quiet;
  const std::string what = "write dataset '" + path + "'";
  const std::vector<hsize_t> dims(shape.begin(), shape.end());
  const int rank = static_cast<int>(dims.size());
  Hdf5Handle space(rank == 0 ? H5Screate(H5S_SCALAR) : H5Screate_simple(rank, dims.data(), nullptr),
                   H5Sclose);
  Hdf5Handle dcpl(H5Pcreate(H5P_DATASET_CREATE), H5Pclose);
  int64_t total = 1;
  for (int64_t d : shape) total *= d;
  if (rank > 0 && total > 0) {
    // Chunks are cut inside one rank's block (every rank passes a block of the same shape), so
    // no filtered chunk is shared between ranks and none has to be gathered before writing.
    std::vector<hsize_t> chunk = chunk_dims(count, dtype_size(file_type), chunk_bytes_);
    check(H5Pset_chunk(dcpl.get(), rank, chunk.data()), what + " (chunking)");
    check(H5Pset_fletcher32(dcpl.get()), what + " (checksum)");
    check(H5Pset_fill_time(dcpl.get(), H5D_FILL_TIME_NEVER), what + " (fill)");
  }
  Hdf5Handle dataset(H5Dcreate2(file_.get(), path.c_str(), hdf5_type(file_type, true), space.get(),
                                H5P_DEFAULT, dcpl.get(), H5P_DEFAULT),
                     H5Dclose);
  check(dataset.valid() ? 0 : -1, what);

  int64_t mine = data != nullptr ? 1 : 0;
  for (int64_t c : count) mine *= c;
  const std::vector<hsize_t> first(start.begin(), start.end()), n(count.begin(), count.end());
  Hdf5Handle mem_space(H5Screate_simple(1, std::vector<hsize_t>{1}.data(), nullptr), H5Sclose);
  if (mine > 0 && rank > 0) {
    mem_space = Hdf5Handle(H5Screate_simple(rank, n.data(), nullptr), H5Sclose);
    check(
        H5Sselect_hyperslab(space.get(), H5S_SELECT_SET, first.data(), nullptr, n.data(), nullptr),
        what + " (block " + std::to_string(start.size()) + "-d outside the shape)");
  } else if (mine == 0) {
    check(H5Sselect_none(space.get()), what);
    check(H5Sselect_none(mem_space.get()), what);
  }
  Hdf5Handle dxpl(H5Pcreate(H5P_DATASET_XFER), H5Pclose);
  if (parallel_) check(H5Pset_dxpl_mpio(dxpl.get(), H5FD_MPIO_COLLECTIVE), what);
  check(H5Dwrite(dataset.get(), hdf5_type(mem_type, false), mem_space.get(), space.get(),
                 dxpl.get(), data),
        what);
}

void Hdf5Writer::virtual_dataset(const std::string& path, DType file_type,
                                 const std::vector<int64_t>& shape,
                                 const std::vector<VirtualSource>& sources) {
  collective_step([&] {
    QuietHdf5 quiet;
    const std::string what = "write virtual dataset '" + path + "'";
    if (parallel_) throw Error("checkpoint file '" + path_ + "': " + what + " needs a serial file");
    const std::vector<hsize_t> dims(shape.begin(), shape.end());
    const int rank = static_cast<int>(dims.size());
    Hdf5Handle space(
        rank == 0 ? H5Screate(H5S_SCALAR) : H5Screate_simple(rank, dims.data(), nullptr), H5Sclose);
    Hdf5Handle dcpl(H5Pcreate(H5P_DATASET_CREATE), H5Pclose);
    for (const VirtualSource& s : sources) {
      const std::vector<hsize_t> first(s.start.begin(), s.start.end()),
          n(s.count.begin(), s.count.end());
      Hdf5Handle source_space(
          rank == 0 ? H5Screate(H5S_SCALAR) : H5Screate_simple(rank, n.data(), nullptr), H5Sclose);
      if (rank > 0)
        check(H5Sselect_hyperslab(space.get(), H5S_SELECT_SET, first.data(), nullptr, n.data(),
                                  nullptr),
              what + " (block outside the shape)");
      check(H5Pset_virtual(dcpl.get(), space.get(), s.file.c_str(), s.dataset.c_str(),
                           source_space.get()),
            what);
    }
    check(H5Sselect_all(space.get()), what);
    Hdf5Handle dataset(H5Dcreate2(file_.get(), path.c_str(), hdf5_type(file_type, true),
                                  space.get(), H5P_DEFAULT, dcpl.get(), H5P_DEFAULT),
                       H5Dclose);
    check(dataset.valid() ? 0 : -1, what);
  });
}

void Hdf5Writer::close() {
  collective_step([&] {
    QuietHdf5 quiet;
    check(H5Fflush(file_.get(), H5F_SCOPE_GLOBAL), "flush");
  });
  // Every rank flushed. A failed H5Fclose may leave the identifier half torn down, so it is
  // never retried.
  collective_step([&] {
    QuietHdf5 quiet;
    check(H5Fclose(file_.release()), "close");
  });
}

}  // namespace tls
