// The whole Transformer-LS language model (the reference's TransformerLSModel), docs/DESIGN.md
// section 1:
//   h = drop_emb(E[x] * sqrt(d))
//   for each layer l: C_next_l = last M rows of [C_l ; h];  h = layer_l(h, C_l)
//   logprobs = log_softmax(drop_emb(h) E^T + out_emb.bias)     (E tied: in_emb.weight)
//   loss = mean over the predicted positions of -logprobs[target]
// The caches carry from block to block without gradient (truncated BPTT).
//
// In a parallel run each rank holds its tp shard of the parameters and its sp slice of the block
// and of the cache ([B_local, T / sp] tokens, [B_local, M / sp, d] caches); the forward returns
// this rank's partial loss sum and the caller sums it over dp x sp (docs/DESIGN.md section 3).
#pragma once

#include <functional>
#include <memory>
#include <vector>

#include "layers/transformer_layer.h"

namespace tls {

// Per-row carried state: one [B, M, d] cache per layer. A cache tensor is never written once it
// is here: the forward replaces it with a new tensor, so a background save (checkpoint_writer.h)
// can hold the one it saves by reference while training goes on.
struct ModelState {
  std::vector<Tensor> caches;
};

// Under --precision bf16 the layers' activations and final_hidden are kept in bfloat16
// (layers/activation_storage.h); the backward widens one layer's to float32 while it runs and
// stores them again, so they are mutable: after the backward they are as the forward left them.
struct ModelSaved {
  Tensor tokens, targets;  // int32 [B, T]
  Tensor embedded;         // h after the embedding dropout (in the activations' storage dtype)
  mutable std::vector<TransformerLayerSaved> layers;
  mutable Tensor final_hidden;  // the last layer's output after drop_emb
  Tensor logprobs;              // [B, T, V]
  PositionTables pos;
  int64_t n_targets = 0;  // targets >= 0 (the loss's denominator)
};

class TransformerLSModel {
 public:
  // topo defaults to one process; the model keeps a copy (its communicators are shared).
  TransformerLSModel(Ops& ops, const ModelConfig& cfg, DType dtype,
                     Topology topo = Topology::single());
  TransformerLSModel(const TransformerLSModel&) = delete;
  TransformerLSModel& operator=(const TransformerLSModel&) = delete;

  const ModelConfig& config() const { return cfg_; }
  DType dtype() const { return dtype_; }
  // The dtype the forward keeps activations in for the backward: bfloat16 when float32 GEMMs
  // take bf16 operands (--precision bf16), else the model's dtype.
  DType activation_storage() const;
  // Chooses it instead (the model's dtype, or bfloat16 for a float32 model); tests use it to
  // tell the storage's rounding from the GEMMs'.
  void set_activation_storage(DType storage);
  const Topology& topology() const { return topo_; }
  Ops& ops() const { return ops_; }
  int64_t local_tokens() const { return cfg_.tokens_per_sample / topo_.layout.sp; }
  int64_t local_mem() const {
    return topo_.layout.sp > 1 ? cfg_.mem_len / topo_.layout.sp : cfg_.mem_len;
  }
  // Every parameter: the model's own (in_emb, out_emb.bias), then each layer's, as declared.
  std::vector<Parameter*> parameters();
  Parameter* find(const std::string& name);
  int64_t parameter_count();  // of the whole model, whatever this rank holds

  ModelState initial_state(int64_t batch) const;  // zero caches, [batch, local_mem(), d]
  // Runs one block: tokens/targets int32 [B_local, local_tokens()] (a target < 0 is not
  // predicted). Advances state's caches. Returns this rank's SUM of the NLL over its predicted
  // targets (saved.n_targets of them); the logprobs stay in saved.
  double forward(const Tensor& tokens, const Tensor& targets, ModelState& state, ModelSaved& saved,
                 const PassContext& ctx);
  // Accumulates d(loss_scale * sum NLL)/d(parameter) into every Parameter::grad. layer_done(l),
  // when given, runs as soon as layer l's gradients are final (layers finish last first), so a
  // caller can start reducing them while the backward goes on.
  void backward(const ModelSaved& saved, double loss_scale, const PassContext& ctx,
                const std::function<void(size_t layer)>& layer_done = {});
  void zero_grad();

  Parameter in_emb;    // [V, d], tied with the output layer
  Parameter out_bias;  // out_emb.bias [V]
  std::vector<TransformerLayer> layers;

 private:
  PositionTables position_tables(const PassContext& ctx) const;
  PassContext with_layout(const PassContext& ctx, int64_t batch) const;

  Ops& ops_;
  ModelConfig cfg_;
  DType dtype_;
  Topology topo_;
  ParameterList params_;  // in_emb and out_bias
  bool storage_set_ = false;
  DType storage_ = DType::f32;
};

}  // namespace tls
