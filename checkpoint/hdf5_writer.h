// Hdf5Writer: creates one HDF5 file and writes attributes and whole tensors into it, each
// process writing only its own hyperslab (DESIGN.md section 5). Given an MPI communicator it
// uses parallel HDF5 (MPI-IO) and every call is collective over it: every rank calls every
// method in the same order with the same names, shapes and attribute values, and a rank with
// nothing to write passes no data (it still takes part). Without one it is plain serial HDF5.
//
// Every dataset is chunked (about 1 MiB per chunk, cut inside one rank's block, so every rank
// must pass a block `count` of the same shape) and carries HDF5's Fletcher32 checksum, so a
// damaged chunk is refused when read. Parallel HDF5 1.10 writes filtered datasets only with
// collective transfers, which is what this uses.
#pragma once

#include <mpi.h>

#include <string>
#include <vector>

#include "checkpoint/hdf5_reader.h"
#include "runtime/tensor.h"

namespace tls {

class Hdf5Writer {
 public:
  // Creates (truncates) `path`. comm == MPI_COMM_NULL: serial HDF5.
  Hdf5Writer(std::string path, MPI_Comm comm, size_t chunk_bytes = size_t{1} << 20);
  ~Hdf5Writer() = default;  // an unclosed file (after an error) is closed without checks
  Hdf5Writer(const Hdf5Writer&) = delete;
  Hdf5Writer& operator=(const Hdf5Writer&) = delete;

  void group(const std::string& path);
  // Scalar attributes on a group (or "/"): int64, float64, or a fixed-length ASCII string.
  void attribute(const std::string& object, const std::string& name, int64_t value);
  void attribute(const std::string& object, const std::string& name, double value);
  void attribute(const std::string& object, const std::string& name, const std::string& value);
  // Creates dataset `path` of global `shape`, stored as `file_type` (f32 or f64), and writes
  // this rank's block [start, start + count) from `data` (row-major, of `mem_type`, converted by
  // HDF5). data == nullptr: this rank writes nothing.
  void write(const std::string& path, DType file_type, const std::vector<int64_t>& shape,
             const std::vector<int64_t>& start, const std::vector<int64_t>& count,
             DType mem_type, const void* data);
  // Flushes (MPI_File_sync under MPI-IO) and closes; throws tls::Error on failure.
  void close();

 private:
  void check(herr_t status, const std::string& what) const;
  void write_attribute(const std::string& object, const std::string& name, hid_t file_type,
                       hid_t mem_type, const void* value);

  std::string path_;
  bool parallel_;
  size_t chunk_bytes_;
  Hdf5Handle file_;
};

}  // namespace tls
