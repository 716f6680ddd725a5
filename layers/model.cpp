#include "layers/model.h"

#include <algorithm>
#include <cmath>

#include "kernels/error.h"

namespace tls {
namespace {
constexpr uint64_t kEmbDropoutId = 1, kWindowPosDropoutId = 2, kFinalDropoutId = 3;
}

TransformerLSModel::TransformerLSModel(Ops& ops, const ModelConfig& cfg, DType dtype, Topology topo)
    : ops_(ops), cfg_(cfg), dtype_(dtype), topo_(std::move(topo)) {
  cfg_.validate();
  cfg_.validate_layout(topo_.layout.tp, topo_.layout.sp);
  params_.allocate(ops, in_emb, ParameterGroup::linear, "in_emb.weight",
                   {cfg.vocab_size, cfg.d_model}, {}, dtype);
  params_.allocate(ops, out_bias, ParameterGroup::linear, "out_emb.bias", {cfg.vocab_size}, {},
                   dtype);
  // Built in place: a layer's parameter list points into it.
  layers = std::vector<TransformerLayer>(static_cast<size_t>(cfg.n_layer));
  for (int64_t l = 0; l < cfg.n_layer; ++l)
    layers[static_cast<size_t>(l)].init(ops, l, cfg, dtype, topo_);
}

std::vector<Parameter*> TransformerLSModel::parameters() {
  std::vector<Parameter*> out = params_.parameters();
  for (TransformerLayer& layer : layers)
    for (Parameter* p : layer.parameters()) out.push_back(p);
  return out;
}

Parameter* TransformerLSModel::find(const std::string& name) {
  for (Parameter* p : parameters())
    if (p->name == name) return p;
  return nullptr;
}

int64_t TransformerLSModel::parameter_count() {
  int64_t n = 0;
  for (Parameter* p : parameters()) {
    int64_t whole = 1;
    for (int64_t d : p->full_shape) whole *= d;
    n += whole;
  }
  return n;
}

void TransformerLSModel::zero_grad() {
  for (Parameter* p : parameters()) ops_.fill(p->grad, 0.0);
}

ModelState TransformerLSModel::initial_state(int64_t batch) const {
  ModelState state;
  for (int64_t l = 0; l < cfg_.n_layer; ++l)
    state.caches.push_back(ops_.zeros({batch, local_mem(), cfg_.d_model}, dtype_));
  return state;
}

PassContext TransformerLSModel::with_layout(const PassContext& ctx, int64_t batch) const {
  PassContext local = ctx;
  local.t_global = cfg_.tokens_per_sample;
  local.t_offset = topo_.sp_rank * local_tokens();
  local.b_offset = topo_.dp_rank * batch;
  return local;
}

PositionTables TransformerLSModel::position_tables(const PassContext& ctx) const {
  const int64_t tokens = cfg_.tokens_per_sample, mem = cfg_.mem_len;
  PositionTables pos;
  std::vector<double> window(static_cast<size_t>(cfg_.window_len));
  for (int64_t delta = 0; delta < cfg_.window_len; ++delta)
    window[static_cast<size_t>(delta)] =
        static_cast<double>(cfg_.clamp_len > 0 ? std::min(delta, cfg_.clamp_len) : delta);
  pos.window = ops_.empty({cfg_.window_len, cfg_.d_model}, dtype_);
  ops_.sinusoid_forward(pos.window, window);
  if (ctx.training && ctx.emb_dropout > 0) {
    PassContext table = ctx;  // one table for every batch row and slice
    table.b_offset = table.t_offset = table.t_global = 0;
    ops_.dropout_apply(pos.window, ctx.emb_dropout,
                       table.key(kWindowPosDropoutId, cfg_.window_len));
  }
  // Ids 0 .. S-1 cover every visible slot; with cpos_clamp_len only ids up to the clamp differ.
  int64_t n_pos = (tokens + mem) / cfg_.chunk_size * cfg_.chunk_rank;
  if (cfg_.cpos_clamp_len > 0) n_pos = std::min(n_pos, cfg_.cpos_clamp_len + 1);
  pos.chunk_ids = n_pos;
  return pos;
}

double TransformerLSModel::forward(const Tensor& tokens, const Tensor& targets, ModelState& state,
                                   ModelSaved& sv, const PassContext& global_ctx) {
  const int64_t B = tokens.dim(0), T = tokens.dim(1), d = cfg_.d_model, M = local_mem();
  const PassContext ctx = with_layout(global_ctx, B);
  if (T != local_tokens())
    throw Error("model: block slice of " + std::to_string(T) + " tokens, but this rank holds " +
                std::to_string(local_tokens()) + " (--tokens-per-sample " +
                std::to_string(cfg_.tokens_per_sample) + " / --sp " +
                std::to_string(topo_.layout.sp) + ")");
  if (static_cast<int64_t>(state.caches.size()) != cfg_.n_layer)
    throw Error("model: state holds " + std::to_string(state.caches.size()) + " caches for " +
                std::to_string(cfg_.n_layer) + " layers");
  sv = ModelSaved();
  sv.tokens = tokens;
  sv.targets = targets;
  sv.pos = position_tables(ctx);

  Tensor h = ops_.empty({B, T, d}, dtype_);
  ops_.embedding_forward(h, in_emb.value, tokens, std::sqrt(static_cast<double>(d)));
  if (ctx.training && ctx.emb_dropout > 0)
    ops_.dropout_apply(h, ctx.emb_dropout, ctx.key(kEmbDropoutId, T));
  sv.embedded = h;

  sv.layers.resize(layers.size());
  for (size_t l = 0; l < layers.size(); ++l) {
    Tensor& cache = state.caches[l];
    // The next cache is the last M rows of [C ; layer input]; with M = T it is the layer input
    // itself, shared (nothing writes a layer's input in place).
    Tensor next = h;
    if (M != T) {
      next = ops_.empty({B, M, d}, dtype_);
      if (M > T) ops_.copy_rows(next, 0, cache, T, M - T);
      const int64_t from_block = std::min(M, T);
      ops_.copy_rows(next, M - from_block, h, T - from_block, from_block);
    }
    Tensor out;
    layers[l].forward(ops_, h, cache, sv.pos, out, sv.layers[l], ctx);
    cache = next;
    h = out;
  }
  if (ctx.training && ctx.emb_dropout > 0)
    ops_.dropout_apply(h, ctx.emb_dropout, ctx.key(kFinalDropoutId, T));
  sv.final_hidden = h;

  Tensor logits = ops_.empty({B, T, cfg_.vocab_size}, dtype_);
  ops_.gemm(false, true, 1.0, h, in_emb.value, 0.0, logits);
  ops_.add_bias(logits, out_bias.value);
  sv.logprobs = ops_.empty(logits.shape(), dtype_);
  ops_.log_softmax_forward(sv.logprobs, logits);
  Tensor losses = ops_.empty({B, T}, dtype_);
  ops_.nll_forward(losses, sv.logprobs, targets);
  std::vector<double> t = ops_.to_host(targets);
  sv.n_targets = std::count_if(t.begin(), t.end(), [](double v) { return v >= 0; });
  return ops_.sum(losses);
}

void TransformerLSModel::backward(const ModelSaved& sv, double loss_scale,
                                  const PassContext& global_ctx,
                                  const std::function<void(size_t layer)>& layer_done) {
  const int64_t B = sv.tokens.dim(0), T = sv.tokens.dim(1), d = cfg_.d_model;
  const PassContext ctx = with_layout(global_ctx, B);
  Tensor dh = ops_.zeros({B, T, d}, dtype_);
  {  // dlogits is freed before the layers' backward
    Tensor dlogits = ops_.zeros(sv.logprobs.shape(), dtype_);
    ops_.log_softmax_nll_backward(dlogits, sv.logprobs, sv.targets, loss_scale);
    ops_.sum_rows(dlogits, out_bias.grad);
    ops_.gemm(true, false, 1.0, dlogits, sv.final_hidden, 1.0, in_emb.grad);
    ops_.gemm(false, false, 1.0, dlogits, in_emb.value, 0.0, dh);
  }
  if (ctx.training && ctx.emb_dropout > 0)
    ops_.dropout_apply(dh, ctx.emb_dropout, ctx.key(kFinalDropoutId, T));
  for (size_t l = layers.size(); l-- > 0;) {
    Tensor dx = ops_.zeros({B, T, d}, dtype_);
    layers[l].backward(ops_, dh, sv.pos, sv.layers[l], dx, ctx);
    dh = dx;
    if (layer_done) layer_done(l);
  }
  if (ctx.training && ctx.emb_dropout > 0)
    ops_.dropout_apply(dh, ctx.emb_dropout, ctx.key(kEmbDropoutId, T));
  ops_.embedding_backward(in_emb.grad, dh, sv.tokens, std::sqrt(static_cast<double>(d)));
}

}  // namespace tls
