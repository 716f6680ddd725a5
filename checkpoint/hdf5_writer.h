// Hdf5Writer: creates one HDF5 file and writes attributes and whole tensors into it, each
// process writing only its own hyperslab (docs/DESIGN.md section 5). Given an MPI communicator it
// uses parallel HDF5 (MPI-IO) and every call is collective over it: every rank calls every
// method in the same order with the same names, shapes and attribute values, and a rank with
// nothing to write passes no data (it still takes part). Without one it is plain serial HDF5.
//
// Every dataset is chunked (about 1 MiB per chunk, cut inside one rank's block, so every rank
// must pass a block `count` of the same shape) and carries HDF5's Fletcher32 checksum, so a
// damaged chunk is refused when read. Parallel HDF5 1.10 writes filtered datasets only with
// collective transfers, which is what this uses.
//
// Failures are agreed after every call, so when every rank gets through the failed call (a
// missing directory, a failure all ranks see) every rank throws there with the failing rank's
// message and the ranks stay in step for the close. After a failure the file is emptied
// (truncated to zero bytes, which gives a full disk back its space) before the collective close,
// so the close can flush HDF5's metadata and leave the library in a clean state. HDF5's own
// collectives do not survive a failure on one rank (a full disk seen by one MPI-IO aggregator
// leaves the others waiting inside H5Dcreate): when the others have not come to the agreement
// within kAgreementSeconds, the failing rank prints its error, deletes the file and ends the job
// with MPI_Abort, which is the only way out that does not hang.
#pragma once

#include <mpi.h>

#include <string>
#include <vector>

#include "checkpoint/hdf5_reader.h"
#include "kernels/tensor.h"

namespace tls {

class Hdf5Writer {
 public:
  // Creates (truncates) `path`. comm == MPI_COMM_NULL: serial HDF5.
  Hdf5Writer(std::string path, MPI_Comm comm, size_t chunk_bytes = size_t{1} << 20);
  ~Hdf5Writer();  // an unclosed file (after an error) is emptied and closed without checks
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
             const std::vector<int64_t>& start, const std::vector<int64_t>& count, DType mem_type,
             const void* data);
  // Serial files only: creates dataset `path` of `shape` as an HDF5 virtual dataset whose block
  // [start, start + count) of each source is the whole dataset `source.dataset` in the file
  // `source.file` (relative names resolve against this file's directory).
  void virtual_dataset(const std::string& path, DType file_type, const std::vector<int64_t>& shape,
                       const std::vector<VirtualSource>& sources);
  // Flushes (MPI_File_sync under MPI-IO) and closes; throws tls::Error on failure.
  void close();

 private:
  void check(herr_t status, const std::string& what) const;
  // Runs one collective step: f() may throw tls::Error on this rank; under MPI every rank then
  // learns whether any rank failed and throws the lowest failing rank's message.
  template <class F>
  void collective_step(F&& f);
  void agree(const std::string& local_error);
  // Completes this failing rank's part of the agreement, or, when the other ranks do not come
  // within kAgreementSeconds, prints `error`, deletes the file and calls MPI_Abort.
  void wait_or_end_the_job(MPI_Request& request, const std::string& error);
  static constexpr int kAgreementSeconds = 10;
  void write_attribute(const std::string& object, const std::string& name, hid_t file_type,
                       hid_t mem_type, const void* value);
  // This rank's part of write_attribute / write, without the agreement.
  void write_attribute_here(const std::string& object, const std::string& name, hid_t file_type,
                            hid_t mem_type, const void* value);
  void write_here(const std::string& path, DType file_type, const std::vector<int64_t>& shape,
                  const std::vector<int64_t>& start, const std::vector<int64_t>& count,
                  DType mem_type, const void* data);

  std::string path_;
  MPI_Comm comm_;
  bool parallel_;
  bool failed_ = false;
  size_t chunk_bytes_;
  Hdf5Handle file_;
};

}  // namespace tls
