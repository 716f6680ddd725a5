// Hdf5Writer over the HDF5 C API. Files use the 1.8 format (superblock and object headers with
// their own checksums; readable by every HDF5 >= 1.8 tool). Datasets: chunked, Fletcher32, no
// fill values (every element is written by some rank).
#include "checkpoint/hdf5_writer.h"

#include <algorithm>

#include "runtime/error.h"

namespace tls {
namespace {

hid_t hdf5_type(DType t, bool in_file) {
  switch (t) {
    case DType::f32: return in_file ? H5T_IEEE_F32LE : H5T_NATIVE_FLOAT;
    case DType::f64: return in_file ? H5T_IEEE_F64LE : H5T_NATIVE_DOUBLE;
    case DType::i32: return in_file ? H5T_STD_I32LE : H5T_NATIVE_INT32;
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
    : path_(std::move(path)), parallel_(comm != MPI_COMM_NULL), chunk_bytes_(chunk_bytes) {
  QuietHdf5 quiet;
  Hdf5Handle fapl(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
  check(H5Pset_libver_bounds(fapl.get(), H5F_LIBVER_V18, H5F_LIBVER_V18), "set the file format");
  if (parallel_) {
    check(H5Pset_fapl_mpio(fapl.get(), comm, MPI_INFO_NULL), "use MPI-IO");
    check(H5Pset_coll_metadata_write(fapl.get(), true), "use collective metadata writes");
  }
  file_ = Hdf5Handle(H5Fcreate(path_.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl.get()), H5Fclose);
  if (!file_.valid()) {
    throw Error("cannot create checkpoint file '" + path_ + "' (" + hdf5_error_detail() + ")");
  }
}

void Hdf5Writer::check(herr_t status, const std::string& what) const {
  if (status >= 0) return;
  std::string detail = hdf5_error_detail();
  throw Error("checkpoint file '" + path_ + "': cannot " + what +
              (detail.empty() ? "" : " (" + detail + ")"));
}

void Hdf5Writer::group(const std::string& path) {
  QuietHdf5 quiet;
  Hdf5Handle g(H5Gcreate2(file_.get(), path.c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
               H5Gclose);
  check(g.valid() ? 0 : -1, "create group '" + path + "'");
}

void Hdf5Writer::write_attribute(const std::string& object, const std::string& name,
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
    check(H5Sselect_hyperslab(space.get(), H5S_SELECT_SET, first.data(), nullptr, n.data(),
                              nullptr),
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

void Hdf5Writer::close() {
  QuietHdf5 quiet;
  check(H5Fflush(file_.get(), H5F_SCOPE_GLOBAL), "flush");
  check(H5Fclose(file_.release()), "close");
}

}  // namespace tls
