#include "support/bf16_step.h"

#include <algorithm>

#include "layers/init.h"
#include "training/optimizer.h"

namespace tls::testing {

std::vector<double> bf16_test_steps(Ops& ops, const ModelConfig& cfg, int steps, bool checkpointing,
                                    std::vector<double>* params,
                                    const std::function<void(bool before)>& memory) {
  constexpr int64_t kBatch = 2;
  TransformerLSModel model(ops, cfg, DType::f32);
  initialize_parameters(ops, model, 3);
  AdamW adam(ops, model.parameters(), OptimizerSettings());
  ModelState state = model.initial_state(kBatch);
  const int64_t T = cfg.tokens_per_sample;
  std::vector<double> ids(static_cast<size_t>(kBatch * T));
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<double>((i * 37 + 11) % 97);
  Tensor tokens = ops.empty({kBatch, T}, DType::i32);
  ops.from_host(tokens, ids);
  PassContext ctx;
  ctx.training = true;
  ctx.dropout = cfg.dropout;
  ctx.emb_dropout = cfg.emb_dropout;
  ctx.activation_checkpointing = checkpointing;
  ctx.seed = 5;
  std::vector<double> losses;
  if (memory) memory(true);
  for (int step = 1; step <= steps; ++step) {
    ctx.step = static_cast<uint64_t>(step);
    model.zero_grad();
    ModelSaved saved;
    const double nll = model.forward(tokens, tokens, state, saved, ctx);
    const double scale = 1.0 / static_cast<double>(std::max<int64_t>(saved.n_targets, 1));
    model.backward(saved, scale, ctx);
    saved = ModelSaved();
    adam.step(step);
    losses.push_back(nll * scale);
  }
  if (memory) memory(false);
  if (params) {
    params->clear();
    for (Parameter* p : model.parameters()) {
      const std::vector<double> v = ops.to_host(p->value);
      params->insert(params->end(), v.begin(), v.end());
    }
  }
  return losses;
}

}  // namespace tls::testing
