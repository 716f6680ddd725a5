// Gradient reduction over dp x sp: after the backward, every parameter gradient is a partial sum
// over the ranks that hold the same parameter shard (dp x sp); an all-reduce makes it the
// gradient of the whole global batch. gradient_norm counts every shard exactly once: tp-sharded
// gradients are summed over tp, replicated ones are taken once.
//
// The reduction overlaps the backward (as Megatron's overlap_grad_reduce): GradientBuckets
// starts a non-blocking all-reduce of each layer's gradients as soon as the model's backward has
// finished that layer, and finish() waits for them before the optimizer reads a gradient. Each
// element is still summed once by one all-reduce over the same ranks, only started earlier.
#pragma once

#include <memory>
#include <vector>

#include "layers/model.h"
#include "layers/parameter.h"
#include "parallel/topology.h"

namespace tls {

class GradientBuckets {
 public:
  GradientBuckets(Ops& ops, const Topology& topo);
  GradientBuckets(const GradientBuckets&) = delete;
  GradientBuckets& operator=(const GradientBuckets&) = delete;
  ~GradientBuckets();

  // Starts the all-reduce of these gradients, which nothing may change until finish(): copied
  // into one flat buffer (a few large messages instead of one per tensor).
  void start(const std::vector<Parameter*>& params);
  // Lets the started all-reduces advance (MPI moves their data only inside MPI calls).
  void progress();
  // Waits for every started all-reduce and writes the sums back into the gradients.
  void finish();

 private:
  struct Bucket {
    std::vector<Parameter*> params;
    Tensor flat;
    std::unique_ptr<Request> request;
  };
  Ops& ops_;
  const Topology& topo_;
  std::vector<Bucket> buckets_;
};

// All of params' gradients as one bucket, started and finished at once.
void reduce_gradients(Ops& ops, const Topology& topo, const std::vector<Parameter*>& params);

// model.backward with the reduction overlapped: each layer's gradients are reduced (started as
// the backward leaves the layer, progressed between layers), then the embedding's and the output
// bias's; on return every gradient is reduced.
void backward_and_reduce_gradients(TransformerLSModel& model, const ModelSaved& saved,
                                   double loss_scale, const PassContext& ctx);

double global_gradient_norm(Ops& ops, const Topology& topo, const std::vector<Parameter*>& params);

}  // namespace tls
