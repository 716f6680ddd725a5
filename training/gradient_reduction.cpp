#include "training/gradient_reduction.h"

#include <cmath>

#include "parallel/traffic.h"

namespace tls {

GradientBuckets::GradientBuckets(Ops& ops, const Topology& topo) : ops_(ops), topo_(topo) {}

// An exception between start() and finish() must not free a buffer MPI still writes to.
GradientBuckets::~GradientBuckets() {
  for (Bucket& b : buckets_) try {
      if (b.request) b.request->wait();
    } catch (...) {
    }
}

void GradientBuckets::start(const std::vector<Parameter*>& params) {
  if (topo_.dp_sp->size() == 1 || params.empty()) return;
  Bucket b;
  b.params = params;
  int64_t total = 0;
  for (const Parameter* p : params) total += p->grad.numel();
  b.flat = ops_.empty({total}, params.front()->grad.dtype());
  int64_t at = 0;
  for (const Parameter* p : params) {
    Tensor slot = b.flat.rows(at, p->grad.numel());
    ops_.copy(slot, p->grad);
    at += p->grad.numel();
  }
  traffic().gradients +=
      ring_allreduce_bytes(static_cast<int64_t>(b.flat.bytes()), topo_.dp_sp->size());
  b.request = topo_.dp_sp->start_allreduce_sum(b.flat);
  buckets_.push_back(std::move(b));
}

void GradientBuckets::progress() {
  for (Bucket& b : buckets_) b.request->progress();
}

void GradientBuckets::finish() {
  for (Bucket& b : buckets_) {
    b.request->wait();
    int64_t at = 0;
    for (Parameter* p : b.params) {
      ops_.copy(p->grad, b.flat.rows(at, p->grad.numel()));
      at += p->grad.numel();
    }
  }
  buckets_.clear();
}

void reduce_gradients(Ops& ops, const Topology& topo, const std::vector<Parameter*>& params) {
  GradientBuckets buckets(ops, topo);
  buckets.start(params);
  buckets.finish();
}

void backward_and_reduce_gradients(TransformerLSModel& model, const ModelSaved& saved,
                                   double loss_scale, const PassContext& ctx) {
  GradientBuckets buckets(model.ops(), model.topology());
  model.backward(saved, loss_scale, ctx, [&](size_t layer) {
    buckets.start(model.layers[layer].parameters());
    buckets.progress();
  });
  // The embedding's gradient is complete only after the first layer's backward.
  buckets.start({&model.in_emb, &model.out_bias});
  buckets.finish();
}

double global_gradient_norm(Ops& ops, const Topology& topo, const std::vector<Parameter*>& params) {
  double sharded = 0, replicated = 0;
  for (const Parameter* p : params)
    (p->tp_sharded() ? sharded : replicated) += ops.sum_squares(p->grad);
  sharded = topo.tp->allreduce_sum(sharded);
  return std::sqrt(sharded + replicated);
}

}  // namespace tls
