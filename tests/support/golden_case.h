// Loading a golden file (tests/golden/, see its README) into a model: the weights through the
// HDF5 reader, the tokens and the per-block expectations. Shared by the model and layer tests,
// with check_golden, the whole-model check on any backend.
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

// Bounds of check_golden: log-probabilities, losses and caches relative to their scale, and
// every parameter gradient relative to the block's largest golden gradient.
struct GoldenTolerance {
  double logprobs, grads;
};
// What the golden tests ask of each element type, on every backend.
inline constexpr GoldenTolerance kGoldenFloat64{1e-9, 1e-8};
inline constexpr GoldenTolerance kGoldenFloat32{2e-4, 1e-3};
// --precision bf16: float32 tensors, GEMM operands rounded to bfloat16 and the backward's saved
// activations stored in bfloat16 (tests/layers/bf16_activations_test.cpp says why these bounds).
inline constexpr GoldenTolerance kGoldenBf16{0x1p-5, 0x1p-4};

// Runs the golden file's model on ops in dtype, every block in order with the caches carried
// (evaluation: no dropout), and checks each block's loss, log-probabilities, caches and
// parameter gradients against the file within tol (GoogleTest failures, traced by file and
// block). Prints one line per block with the loss and the worst gradient error.
void check_golden(Ops& ops, const std::string& file, DType dtype, GoldenTolerance tol);

}  // namespace tls::testing
