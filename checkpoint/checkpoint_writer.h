// Saving a checkpoint (DESIGN.md section 5): one HDF5 file written collectively through parallel
// HDF5 over the world communicator, every tensor stored whole under its reference name and
// shape, each rank writing only its hyperslab and a replicated tensor written by one rank.
//
// Atomic: the data goes to `<path>.tmp-<job id>`, which is flushed, closed and fsynced on every
// rank, then renamed to `path` by rank 0 (and the directory fsynced). A crash before the rename
// leaves only the temporary file; whatever `path` named before is untouched.
//
// Fault injection (tests only, off by default): TLS_FAULT_INJECT=save_abort_rank<R> makes world
// rank R call std::abort() halfway through writing /model.
#pragma once

#include <string>

#include "checkpoint/checkpoint_contents.h"
#include "kernels/ops.h"

namespace tls {

// Collective over t.world (serial HDF5 when t.world is not an MPI communicator, i.e. one
// process). Throws tls::Error on every rank if any rank fails; the temporary file is then left.
void save_checkpoint(const std::string& path, const CheckpointContents& contents,
                     const Topology& t, Ops& ops);


}  // namespace tls
