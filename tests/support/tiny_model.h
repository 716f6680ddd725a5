// The tiny model the training tests run (2 layers, d 32, blocks of 32 tokens): small enough for
// dozens of steps in a test, with every part of the architecture present.
#pragma once

#include "layers/model.h"

namespace tls::testing {

inline ModelConfig tiny_training_model(double dropout, double emb_dropout = 0.0) {
  ModelConfig cfg;
  cfg.n_layer = 2;
  cfg.d_model = 32;
  cfg.n_head = 4;
  cfg.d_inner = 64;
  cfg.chunk_size = 8;
  cfg.chunk_rank = 1;
  cfg.window_len = 16;
  cfg.mem_len = 32;
  cfg.tokens_per_sample = 32;
  cfg.dropout = dropout;
  cfg.emb_dropout = emb_dropout;
  return cfg;
}

}  // namespace tls::testing
