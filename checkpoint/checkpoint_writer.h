// Saving a checkpoint (docs/DESIGN.md section 5), format version 2: every rank writes its own part
// file with serial HDF5 (checkpoint/part_file.h), then rank 0 writes the checkpoint itself, a small
// HDF5 file whose datasets are virtual datasets mapping each rank's block of the part files into
// the whole tensor under its reference name and shape. h5py and the HDF5 tools read it as one
// file; the reader (checkpoint_reader.h) reads the parts through its mappings.
//
// A save runs in three steps so that the middle one can run on a background thread:
//   begin_save    collective, on the caller's thread: checks what every rank holds (agreed),
//                 rank 0 checks the free space, the ranks agree on the part names, each copies
//                 its blocks to host memory, and rank 0 gathers every rank's list of blocks;
//   write_part    one rank, no MPI: writes, flushes, closes and fsyncs this rank's part;
//   write_master  rank 0, no MPI, once every part is durable: writes the checkpoint under a
//                 temporary name, fsyncs it and renames it into place.
// Parts are named `<stem>.<token>.part<r>.h5` next to `<stem>.h5`, with a token fresh for every
// save, so a save never writes a file an earlier checkpoint uses. A replicated tensor is written by
// one rank (Topology::writes_parameter); a cache, the same on every tp rank, in 1/tp row shares.
// A rank holding nothing writes no part. Until the rename nothing names the new parts, so a crash
// at any point leaves the previous checkpoint untouched; the parts of an unfinished save are
// deleted by the next prune (checkpoint_dir.h).
//
// Fault injection (tests only; parallel/fault_injection.h): TLS_FAULT_INJECT=<point>_abort_rank<R>
// makes world rank R call std::abort() at: "save" (halfway through writing its part),
// "save_durable" (its part durable, not yet reported), "save_master" (rank 0: the checkpoint
// written under its temporary name, not renamed); TLS_FAULT_INJECT=save_block_abort_rank<R> kills
// rank R by SIGKILL as it starts writing its third block, save_block_throw_rank<R> makes that
// write fail with an error instead. TLS_FAULT_INJECT=save_no_space_check skips the
// space check (TLS_FAULT_INJECT=save_slow: background_save.h).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "checkpoint/checkpoint_contents.h"
#include "checkpoint/snapshot_buffer.h"
#include "kernels/ops.h"

namespace tls {

// One block this rank writes: where it goes and its values in the file's type, either a host
// copy or, for a cache already on the host in the file's type, the cache itself held by
// reference: the model replaces a layer's cache with a new tensor at every block and never
// writes into one (layers/model.h), so the tensor a save holds keeps the values it had at
// start() without a copy on the step that saves. A block whose copy is deferred (a host tensor
// that training reads until its next optimizer update) holds its tensor until take_snapshot().
struct HostBlock {
  std::string dataset;
  std::string part_name;  // its name in the part file when not `dataset` (a rank's second block
                          // of one tensor: the runs of a zigzag cache)
  Hyperslab slab;
  DType type = DType::f32;
  SnapshotBuffer data;  // the copy: bytes + PartFileWriter::kSlackBytes; null when held
  Tensor held;  // a cache ([B, M, d]; the block is rows [held_row0, + slab.count[1])), or the
                // tensor a deferred copy reads
  int64_t held_row0 = 0;
  bool copy_deferred = false;  // data is to be filled from `held` by take_snapshot()
  size_t bytes = 0;
  // Copies `n` bytes of the block's row-major values from byte `at` into `out`.
  void gather(size_t at, size_t n, char* out) const;
};

// A save under way on one rank.
struct PendingSave {
  std::string path;         // the checkpoint, <dir>/<stem>.h5
  std::string part_prefix;  // "<stem>.<token>"
  int world_rank = 0, world_size = 1;
  CheckpointContents meta;  // metadata only: the tensor views are cleared
  bool has_optimizer = false, has_caches = false;
  Layout layout;
  std::vector<HostBlock> blocks;      // this rank's
  std::vector<std::string> manifest;  // rank 0: every rank's blocks, one line each
  std::string part_path(int rank) const;
  // Makes the deferred copies (no MPI); until it returns, the tensors they read must not change.
  void take_snapshot();
};

// Collective over t.world. `reuse` hands in the buffers of an earlier save (same sizes: no new
// allocation on the step that saves). Holds host caches by reference: until write_part is done,
// the caller must replace a cache tensor rather than write into it (the model does). Throws
// tls::Error on every rank if any rank fails.
// With `defer_copies`, the copies of host parameters and moments already in the file's type are
// left to take_snapshot() (BackgroundSaver makes them on its thread while the next step's
// forward and backward read those tensors).
std::unique_ptr<PendingSave> begin_save(const std::string& path, const CheckpointContents& contents,
                                        const Topology& t, Ops& ops,
                                        std::vector<HostBlock> reuse = {},
                                        bool defer_copies = false);
// No MPI. Throws tls::Error naming the part file; a failed part file is deleted. The snapshot
// must be taken.
void write_part(const PendingSave& save);
// Rank 0, no MPI. Throws tls::Error; the temporary file is then deleted.
void write_master(const PendingSave& save);

// Collective, synchronous: begin_save, write_part, agreement, write_master.
void save_checkpoint(const std::string& path, const CheckpointContents& contents, const Topology& t,
                     Ops& ops);

// The bytes save_checkpoint writes for `contents`, an upper bound: every tensor's bytes plus
// HDF5's headers, chunk indexes and attributes of the parts and the checkpoint.
int64_t checkpoint_file_bytes(const CheckpointContents& contents, const Topology& t);

}  // namespace tls
