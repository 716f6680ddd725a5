// Saving a checkpoint (docs/DESIGN.md section 5): one HDF5 file written collectively through parallel
// HDF5 over the world communicator, every tensor stored whole under its reference name and
// shape, each rank writing only its hyperslab and a replicated tensor written by one rank.
//
// Atomic: the data goes to `<path>.tmp-<job id>`, which is flushed, closed and fsynced on every
// rank, then renamed to `path` by rank 0 (and the directory fsynced). A crash before the rename
// leaves only the temporary file; whatever `path` named before is untouched.
//
// Space: before writing, rank 0 compares the file's size (data plus a bound on HDF5's metadata)
// with the space free where it goes and refuses a save that cannot fit, naming both. A disk that
// fills up during the write anyway (another writer, a quota) fails on every rank together; the
// temporary file is then deleted and the error says the file system is full.
//
// Fault injection (tests only, off by default): TLS_FAULT_INJECT=save_abort_rank<R> makes world
// rank R call std::abort() halfway through writing /model; TLS_FAULT_INJECT=save_no_space_check
// skips the space check so a test can fill the disk during the write itself.
#pragma once

#include <string>

#include "checkpoint/checkpoint_contents.h"
#include "kernels/ops.h"

namespace tls {

// Collective over t.world (serial HDF5 when t.world is not an MPI communicator, i.e. one
// process). Throws tls::Error on every rank if any rank fails. The temporary file of a failed
// write is deleted; one left by a killed process is deleted by the next save_to_directory.
void save_checkpoint(const std::string& path, const CheckpointContents& contents, const Topology& t,
                     Ops& ops);

// The size of the file save_checkpoint writes for `contents`, an upper bound: every tensor's
// bytes plus HDF5's headers, chunk indexes and attributes.
int64_t checkpoint_file_bytes(const CheckpointContents& contents, const Topology& t);

}  // namespace tls
