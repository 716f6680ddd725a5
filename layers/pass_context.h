// The context of one forward/backward pass: whether dropout is active, which key draws each of
// its masks, where this rank's rows and positions sit in the global batch and block, and whether
// activations are recomputed in the backward (activation checkpointing).
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/ops.h"
#include "parallel/sequence_layout.h"

namespace tls {

// Context of one forward/backward pass: whether dropout is active and which key draws it.
struct PassContext {
  bool training = false;
  // Keep only each layer's input in the forward and recompute its activations in the backward.
  bool activation_checkpointing = false;
  // Tokens per piece of that recomputation (0: automatic; else a multiple of the chunk size and
  // at least the window).
  int64_t recompute_piece = 0;
  uint64_t seed = 0;
  uint64_t step = 0;
  double dropout = 0.0;
  double emb_dropout = 0.0;
  int64_t b_offset = 0;  // first local batch row in the global batch (data parallel)
  int64_t t_offset = 0;  // first local position in the block (sequence parallel)
  int64_t t_global = 0;  // positions of the whole block (0: the local count)
  // When the local rows are several runs of positions (the zigzag sp layout,
  // parallel/sequence_layout.h): each run's local rows and global positions; t_offset unused.
  std::vector<Segment> segments;

  // Key for a [B_local, tokens, cols] activation, tensor_id unique per dropout site. Columns
  // split over tp pass their global count and offset.
  DropoutKey key(uint64_t tensor_id, int64_t tokens, int64_t cols_global = 0,
                 int64_t col_offset = 0) const {
    DropoutKey k;
    k.seed = seed;
    k.step = step;
    k.tensor_id = tensor_id;
    k.t_local = tokens;
    k.t_global = t_global > 0 ? t_global : tokens;
    k.t_offset = t_global > 0 ? t_offset : 0;
    k.b_offset = b_offset;
    k.cols_global = cols_global;
    k.col_offset = col_offset;
    return k;
  }

  // Dropout with probability p on x [B_local, tokens, cols]: one key per run of positions, so
  // the mask is that of the global elements whatever the layout.
  void drop(Ops& ops, Tensor& x, double p, uint64_t tensor_id, int64_t tokens,
            int64_t cols_global = 0, int64_t col_offset = 0) const;
  // The context of the local rows [t0, t0 + n) of a block of `tokens` rows.
  PassContext rows(int64_t t0, int64_t n, int64_t tokens) const;
};

}  // namespace tls
