// The model's hyperparameters (docs/DESIGN.md section 1), named like the reference's flags, and
// their validation. Validation happens once, at start; each broken rule is reported with the
// option's flag name and the rule, e.g. "--tokens-per-sample 30 must be a multiple of
// --chunk-size 4".
#pragma once

#include <cstdint>
#include <string>

#include "parallel/topology.h"

namespace tls {

struct ModelConfig {
  int64_t vocab_size = 256;
  int64_t n_layer = 2;
  int64_t d_model = 64;
  int64_t n_head = 4;
  int64_t d_inner = 256;
  int64_t chunk_size = 8;          // c
  int64_t chunk_rank = 1;          // r
  int64_t window_len = 16;         // w
  int64_t mem_len = 64;            // M
  int64_t tokens_per_sample = 64;  // T
  bool pre_ln = true;
  bool use_gelu = true;
  bool use_bias = false;
  int64_t clamp_len = -1;       // <= 0: off
  int64_t cpos_clamp_len = -1;  // <= 0: off
  double dropout = 0.0;
  double emb_dropout = 0.0;

  int64_t d_head() const { return d_model / n_head; }
  int64_t n_mem_chunks() const { return mem_len / chunk_size; }
  int64_t n_block_chunks() const { return tokens_per_sample / chunk_size; }

  // Throws tls::Error naming the first broken rule (flag name and rule).
  void validate() const;
  // The parallel layout's rules (docs/DESIGN.md section 3), checked before any work: tp divides
  // --d-model, --n-head and --d-inner; sp > 1 needs --mem-len = --tokens-per-sample, and each
  // slice is at least --window-len long and a multiple of --chunk-size. Throws tls::Error
  // naming the option and the rule.
  // The zigzag sp layout (parallel/sequence_layout.h) also needs each half-slice T/(2 sp) at
  // least --window-len and a multiple of --chunk-size.
  void validate_layout(int tp, int sp, SpOrder order = SpOrder::contiguous) const;
  // Whether the zigzag layout fits sp (sp > 1 and the half-slice rules); else why not.
  bool zigzag_fits(int sp, std::string* why = nullptr) const;
};

// A one-line summary of the model for logs, e.g. "n_layer 2, d_model 64, n_head 4 (d_head 16),
// ...". Does not validate.
std::string describe(const ModelConfig& config);

// --batch-size rows are split over the dp data-parallel groups: dp must divide it.
void validate_batch(int64_t batch_size, int dp);

}  // namespace tls
