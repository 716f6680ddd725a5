// Loading a golden file (tests/golden/, see its README) into a model: the weights through the
// HDF5 reader, the tokens and the per-block expectations. Shared by the model and layer tests.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "checkpoint/hdf5_reader.h"
#include "layers/model.h"
#include "support/gradcheck.h"

namespace tls::testing {

std::string golden_path(const std::string& file);
std::vector<std::string> golden_files();

struct GoldenCase {
  std::unique_ptr<Hdf5Reader> file;
  ModelConfig config;
  int64_t batch = 0, n_blocks = 0;
  std::vector<int32_t> tokens;  // [batch, n_blocks * T + 1]

  explicit GoldenCase(const std::string& path);
  void load_weights(Ops& ops, TransformerLSModel& model) const;
  // Inputs and targets of block i as int32 tensors [batch, T].
  Tensor block_inputs(Ops& ops, int64_t block) const;
  Tensor block_targets(Ops& ops, int64_t block) const;
  std::vector<double> expected(const std::string& dataset) const;
};

}  // namespace tls::testing
