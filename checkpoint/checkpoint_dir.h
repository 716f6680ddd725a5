// The save directory (docs/DESIGN.md sections 5 and 6): checkpoints are
// `<save-dir>/checkpoint_<update>.h5`, and `checkpoint_last.h5` is a symbolic link naming the
// newest complete one. The link is replaced atomically (a new link under a temporary name,
// renamed over the old one), only after its target is completely written and renamed into
// place, so it never names a partial file. Pruning keeps the newest --keep-last checkpoints.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "checkpoint/checkpoint_writer.h"
#include "kernels/ops.h"

namespace tls {

inline constexpr const char* kLastCheckpointName = "checkpoint_last.h5";
inline constexpr const char* kBestCheckpointName = "checkpoint_best.h5";

std::string checkpoint_file_name(int64_t step);  // "checkpoint_<step>.h5"
std::string last_checkpoint_path(const std::string& dir);
std::string best_checkpoint_path(const std::string& dir);
// The steps of the complete checkpoints in `dir` (checkpoint_<N>.h5), ascending.
std::vector<int64_t> checkpoint_steps(const std::string& dir);

// Collective and synchronous (BackgroundSaver's start, then wait): saves `contents` as
// <dir>/checkpoint_<contents.step>.h5, then rank 0 points checkpoint_last.h5 at it (and
// checkpoint_best.h5 too when `best`) and prunes. keep_last <= 0 keeps every checkpoint. Returns
// the new checkpoint's path.
std::string save_to_directory(const std::string& dir, int keep_last,
                              const CheckpointContents& contents, const Topology& t, Ops& ops,
                              bool best = false);

// Single-process steps (rank 0 runs them). point_last_at names `file_name` (in dir) as the
// newest checkpoint. prune_checkpoints deletes all but the newest `keep_last` checkpoints (never
// the newest one, never the one checkpoint_last names), the temporary files that interrupted
// saves left behind, and every part file no checkpoint in dir (checkpoint_best.h5 included)
// names: those of pruned checkpoints and of saves that never completed. Call it only while no
// save is being written into dir.
void point_last_at(const std::string& dir, const std::string& file_name);
// Gives the complete checkpoint `file_name` (in dir) the name checkpoint_best.h5, atomically.
void point_best_at(const std::string& dir, const std::string& file_name);
void prune_checkpoints(const std::string& dir, int keep_last);
// prune_checkpoints in two steps: what to delete (reads the checkpoints' part lists with HDF5),
// then the deleting (file system calls only, so it may run beside HDF5 use on another thread).
std::vector<std::string> files_to_prune(const std::string& dir, int keep_last);
void delete_files(const std::string& dir, const std::vector<std::string>& files);

}  // namespace tls
