// Loading a checkpoint (docs/DESIGN.md section 5) into any parallel layout: tensors are stored
// whole, so each rank reads only the hyperslab its own Parameter sharding and cache slice declare
// (checkpoint_contents.h), whatever layout saved the file.
//
// Validation, each failure a tls::Error whose one line names the file, the dataset or attribute
// and the problem: the file exists and is HDF5 (not truncated), `format` and `format_version`
// (only version 1 is read), every hyperparameter equals the run's (docs/DESIGN.md section 4: with
// allow_length_change, tokens_per_sample and mem_len may differ and the caches are not loaded),
// every dataset is present with the expected shape and a floating-point type, and, in files that
// declare checksums, carries its Fletcher32 checksum, which HDF5 verifies on every read. Stored
// float32 loads into float64 runs and vice versa. Metadata is checked on every rank before any
// tensor is touched; a damaged chunk is found while reading.
#pragma once

#include <limits>
#include <string>

#include "checkpoint/checkpoint_contents.h"
#include "checkpoint/hdf5_reader.h"
#include "kernels/ops.h"

namespace tls {

// A checkpoint's metadata: what `inspect` prints and what fine-tuning builds its model from.
struct CheckpointInfo {
  std::string path;
  ModelConfig config;        // not validated (callers may change T and M first)
  Layout layout;             // the layout it was saved from (1, 1, 1 when not recorded)
  std::string precision;     // "fp32" or "fp64"; "" when not recorded (the golden files)
  bool checksummed = false;  // every dataset carries a Fletcher32 checksum
  bool has_optimizer = false, has_state = false;
  int64_t step = 0;  // updates done (0 without /state)
  bool has_training = false;
  TrainSettings training;  // the run's settings, when has_training
  int64_t data_bytes = -1;
  int64_t data_digest = 0;
  // The validation loss of the model saved (NaN when the save did not follow a validation).
  double valid_loss = std::numeric_limits<double>::quiet_NaN();
};

CheckpointInfo read_checkpoint_info(const std::string& path);
CheckpointInfo read_checkpoint_info(const Hdf5Reader& file);

struct LoadOptions {
  // Only /model (fine-tuning, eval, generate): the optimizer's moments, the caches and the step
  // are left alone, and dropout may differ from the file's.
  bool weights_only = false;
  // tokens_per_sample and mem_len may differ from the file's; the caches are then not loaded.
  bool allow_length_change = false;
};

// Collective over t.world: fills contents.params (and, unless weights_only, the moments, the
// caches when present in contents and the step) from `path`. If any rank refuses, every rank
// throws the same message. A refusal found while reading data may leave tensors partly loaded.
CheckpointInfo load_checkpoint(const std::string& path, CheckpointContents& contents,
                               const Topology& t, Ops& ops, const LoadOptions& options = {});

}  // namespace tls
