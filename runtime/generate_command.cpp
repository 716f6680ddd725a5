// tls_dist generate: text sampled from a checkpoint after --prompt (training/generator.h).
// Runs on one process; in a multi-rank launch rank 0 generates and prints.
#include <cstdio>

#include "kernels/error.h"
#include "runtime/commands.h"
#include "runtime/run_setup.h"
#include "training/generator.h"

namespace tls {

int run_generate(const RunOptions& o) {
  const CheckpointInfo info = read_checkpoint_info(o.checkpoint);
  ModelConfig cfg = info.config;
  cfg.dropout = cfg.emb_dropout = 0;
  cfg.validate();
  const int64_t max_prompt = 1 << 16;
  if (static_cast<int64_t>(o.prompt.size()) > max_prompt)
    throw Error("--prompt is " + std::to_string(o.prompt.size()) + " bytes; at most " +
                std::to_string(max_prompt) + " are allowed");
  auto ops = make_backend(o);
  TransformerLSModel model(*ops, cfg, dtype_of_precision(o.precision));
  CheckpointContents contents = checkpoint_contents(model, nullptr, nullptr, 0, TrainSettings());
  LoadOptions load;
  load.weights_only = true;
  load_checkpoint(o.checkpoint, contents, model.topology(), *ops, load);
  SamplingSettings sampling;
  sampling.max_new_bytes = o.max_new_bytes;
  sampling.temperature = o.temperature;
  sampling.top_k = o.top_k;
  sampling.seed = o.seed;
  const std::string text = generate_text(model, o.prompt, sampling);
  if (model.topology().world_rank == 0) {
    std::fwrite(o.prompt.data(), 1, o.prompt.size(), stdout);
    std::fwrite(text.data(), 1, text.size(), stdout);
    std::printf("\n");
  }
  return 0;
}

}  // namespace tls
