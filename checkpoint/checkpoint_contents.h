// What one rank saves to, or loads from, a checkpoint (docs/DESIGN.md section 5): views of the live
// parameters, AdamW moments and carried caches, plus the run's model config and the training
// settings exact resume needs. Nothing is copied; the writer reads and the reader fills these.
//
// Where each piece sits in the file:
//   /model/<name>, /optimizer/exp_avg/<name>, /optimizer/exp_avg_sq/<name>: the parameter's
//     full_shape; this rank's hyperslab is [shard_start, +shard_count) (the whole tensor when
//     not tp-sharded).
//   /state/cache/layers.<l>: [B_global, M, d]; this rank holds rows [dp_rank * B_local, +B_local)
//     and its positions (parallel/sequence_layout.h; replicated over tp).
//   /state attribute `step`; root attributes: hyperparameters, layout, precision, settings.
#pragma once

#include <limits>
#include <string>
#include <vector>

#include "layers/model.h"
#include "parallel/sequence_layout.h"
#include "parallel/topology.h"
#include "training/trainer.h"

namespace tls {

struct CheckpointContents {
  ModelConfig config;
  DType dtype = DType::f32;  // the run's precision: float64 runs store float64, others float32
  std::vector<Parameter*> params;
  std::vector<Tensor>* exp_avg = nullptr;  // aligned with params; null: no optimizer state
  std::vector<Tensor>* exp_avg_sq = nullptr;
  std::vector<Tensor>* caches = nullptr;  // one [B_local, M_local, d] per layer; null: none
  int64_t step = 0;                       // updates done
  TrainSettings training;                 // batch_size is B_global
  int64_t data_bytes = -1;                // size of the training corpus (-1: unknown)
  int64_t data_digest = 0;                // its FNV-1a digest (training/byte_corpus.h)
  // The validation loss of this state, when the save follows a validation (root attribute
  // `valid_loss`; NaN: none): how checkpoint_best.h5 is chosen, also after a resume.
  double valid_loss = std::numeric_limits<double>::quiet_NaN();

  bool has_optimizer() const { return exp_avg != nullptr && exp_avg_sq != nullptr; }
  // "fp64" or "fp32", the root attribute `precision`.
  std::string precision() const { return dtype == DType::f64 ? "fp64" : "fp32"; }
};

// Views of a model with (optionally) its optimizer and carried state.
inline CheckpointContents checkpoint_contents(TransformerLSModel& model, AdamW* optimizer,
                                              ModelState* state, int64_t step,
                                              const TrainSettings& training) {
  CheckpointContents c;
  c.config = model.config();
  c.dtype = model.dtype();
  c.params = optimizer != nullptr ? optimizer->params() : model.parameters();
  if (optimizer != nullptr) {
    c.exp_avg = &optimizer->exp_avg();
    c.exp_avg_sq = &optimizer->exp_avg_sq();
  }
  if (state != nullptr) c.caches = &state->caches;
  c.step = step;
  c.training = training;
  return c;
}

// A hyperslab of a stored tensor: its global shape and the block this rank holds.
struct Hyperslab {
  std::vector<int64_t> shape, start, count;
};

// The block of parameter `p` this rank holds.
inline Hyperslab parameter_slab(const Parameter& p) {
  Hyperslab s{p.full_shape, p.shard_start, p.shard_count};
  if (!p.tp_sharded()) {
    s.start.assign(p.full_shape.size(), 0);
    s.count = p.full_shape;
  }
  return s;
}

// The blocks of a layer's cache this rank holds, one per run of positions
// (parallel/sequence_layout.h; the caches keep the global position order whatever the layout):
// local [B_local, M_local, d] inside the global [B_global, M, d]. rows: the run's local rows.
struct CacheBlock {
  Hyperslab slab;
  int64_t row0 = 0;
};
inline std::vector<CacheBlock> cache_blocks(const Tensor& local, const Topology& t,
                                            int64_t batch_global, int64_t mem_len) {
  const int64_t b = local.dim(0), m = local.dim(1), d = local.dim(2);
  std::vector<CacheBlock> out;
  if (m * t.layout.sp != mem_len) {  // not sliced (sp = 1 with M != T is one run anyway)
    out.push_back({{{batch_global, mem_len, d}, {t.dp_rank * b, 0, 0}, {b, m, d}}, 0});
    return out;
  }
  for (const Segment& seg : SequenceLayout::of(t.layout, mem_len).segments(t.sp_rank))
    out.push_back(
        {{{batch_global, mem_len, d}, {t.dp_rank * b, seg.t0, 0}, {b, seg.n, d}}, seg.row0});
  return out;
}

}  // namespace tls
