// Model FLOPs of one forward pass, counted from the math of docs/DESIGN.md section 1 (a
// multiply-add is 2 FLOPs; LayerNorms, softmaxes and elementwise work are not counted). Training
// counts 3 x forward (backward = 2 x forward); recomputation is not counted.
#pragma once

#include <cstdint>
#include <string>

#include "layers/model_config.h"

namespace tls::bench {

// The long-sequence config of the length, memory and parallel benches: d = 256, 4 heads,
// d_inner 1024, window 256, chunk 16, rank 1 (T and M are set by each bench).
inline ModelConfig long_sequence_config(int64_t n_layer) {
  ModelConfig cfg;
  cfg.n_layer = n_layer;
  cfg.d_model = 256;
  cfg.n_head = 4;
  cfg.d_inner = 1024;
  cfg.chunk_size = 16;
  cfg.chunk_rank = 1;
  cfg.window_len = 256;
  return cfg;
}

// How the compressed part's score q_t . khat[j] + q_t . P[id] is counted: as the two dot products
// docs/DESIGN.md writes (like the window's content and positional terms), or as one, folding P into
// the key of the query's chunk (an add per chunk, not per query).
enum class CompressedScore { two_dot_products, folded };

// The paper's base model, two layers of it (d = 512, 8 heads, d_inner 2048, chunk 16, rank 1):
// the training-step bench (window 256) and the GPU benchmark (window 512), T = M = tokens.
inline ModelConfig base_config_two_layers(int64_t window, int64_t tokens) {
  ModelConfig cfg;
  cfg.n_layer = 2;
  cfg.d_model = 512;
  cfg.n_head = 8;
  cfg.d_inner = 2048;
  cfg.chunk_size = 16;
  cfg.chunk_rank = 1;
  cfg.window_len = window;
  cfg.tokens_per_sample = cfg.mem_len = tokens;
  return cfg;
}

inline double forward_flops(const ModelConfig& c, int64_t batch,
                            CompressedScore score = CompressedScore::folded) {
  const double T = c.tokens_per_sample, M = c.mem_len, d = c.d_model, w = c.window_len;
  const double r = c.chunk_rank, cs = c.chunk_size, H = c.n_head;
  const double mem_slots = M / cs * r, slots = (M + T) / cs * r;
  // Visible compressed slots summed over the block's queries: query t sees (M/c + t/c) r slots.
  double visible = 0;
  for (int64_t t = 0; t < c.tokens_per_sample; ++t)
    visible += (static_cast<double>(c.mem_len / c.chunk_size + t / c.chunk_size)) * r;
  double layer = 0;
  layer += 4 * 2 * T * d * d;                  // proj_query/key/val/out on the block
  layer += 2 * 2 * w * d * d;                  // key/val of the cache rows the window reaches
  layer += 2 * 2 * mem_slots * d * d;          // key/val of the compressed cache
  layer += 2 * (T + M) * d * H * r;            // dconv_1 scores
  layer += 2 * (M + 2 * T) * d * r;            // compressing the cache and the block's keys/values
  layer += 2 * w * d * d + 2 * slots * d * d;  // r_net, r_net_chunk
  layer += 6 * T * w * d;                      // window: content + position scores, weighted sum
  // compressed: scores (one or two dot products), weighted sum
  layer += (score == CompressedScore::folded ? 4 : 6) * visible * d;
  layer += 2 * 2 * T * d * c.d_inner;            // fc1, fc2
  const double head = 2 * T * d * c.vocab_size;  // tied output layer
  return batch * (c.n_layer * layer + head);
}

inline const char* flops_formula() {
  return "per layer: 8Td^2 + 4wd^2 + 4(M/c)r d^2 + 2(T+M)dHr + 2(M+2T)dr + 2wd^2 + 2((M+T)/c)r d^2"
         " + 6Twd + 4d*sum_t visible(t) (6d*sum_t visible(t) counting the positional dot) + "
         "4Td*d_inner;"
         " head 2TdV; training = 3 x forward";
}

}  // namespace tls::bench
