// Reading a model's hyperparameters back from a checkpoint's (or golden file's) root attributes,
// docs/DESIGN.md section 5: `format` = "tls_dist-checkpoint", `format_version` 1 or 2, and every
// model hyperparameter as an int64 scalar (booleans 0/1, clamps -1 when off).
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "checkpoint/hdf5_reader.h"
#include "layers/model_config.h"

namespace tls {

inline constexpr const char* kCheckpointFormat = "tls_dist-checkpoint";
// Version 2 (written): virtual datasets over per-rank part files; version 1 (read): one file.
inline constexpr int64_t kCheckpointFormatVersion = 2;
inline constexpr int64_t kOldestCheckpointFormatVersion = 1;

// Throws tls::Error naming the file if the format or version is wrong, an attribute is missing,
// or a boolean is not 0/1. `dropout` / `emb_dropout` are read when present (float attributes),
// else left at 0. The result is not validated: callers may override tokens_per_sample and
// mem_len first (docs/DESIGN.md section 4), then call validate().
ModelConfig config_from_attributes(const Hdf5Reader& file);

// The integer root attributes of `config`, in a fixed order: every int64 hyperparameter under its
// name, booleans as 0/1, clamps as -1 when off (<= 0). The writer stores them; the reader
// compares a run's config with a file's through the same list.
std::vector<std::pair<std::string, int64_t>> hyperparameter_attributes(const ModelConfig& config);

}  // namespace tls
