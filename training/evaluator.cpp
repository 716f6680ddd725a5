#include "training/evaluator.h"

#include <cmath>
#include <vector>

#include "parallel/sequence_layout.h"
#include "training/byte_corpus.h"

namespace tls {

double EvalResult::bpc() const { return loss() / std::log(2.0); }

EvalResult evaluate(TransformerLSModel& model, const std::string& path, int64_t max_bytes) {
  Ops& ops = model.ops();
  const Topology& topo = model.topology();
  const int64_t T = model.config().tokens_per_sample, T_local = model.local_tokens();
  const SequenceLayout layout = SequenceLayout::of(topo.layout, T);
  ByteStream stream(path, T);
  int64_t n_blocks = stream.num_blocks();
  if (max_bytes > 0) n_blocks = std::min(n_blocks, (max_bytes - 1 + T - 1) / T);
  ModelState state = model.initial_state(1);
  PassContext ctx;  // evaluation: no dropout
  EvalResult result;
  std::vector<int32_t> inputs, targets;
  for (int64_t i = 0; i < n_blocks; ++i) {
    const int64_t real = stream.block(i, inputs, targets);
    // Right-pad the short last block: padded inputs are byte 0, padded targets are not counted.
    std::vector<double> in(static_cast<size_t>(T_local), 0.0),
        tg(static_cast<size_t>(T_local), -1.0);
    for (int64_t t = 0; t < T_local; ++t) {
      const int64_t g = layout.global_position(topo.sp_rank, t);
      if (g < real) {
        in[static_cast<size_t>(t)] = inputs[static_cast<size_t>(g)];
        tg[static_cast<size_t>(t)] = targets[static_cast<size_t>(g)];
      }
    }
    Tensor tokens = ops.empty({1, T_local}, DType::i32),
           target_tensor = ops.empty({1, T_local}, DType::i32);
    ops.from_host(tokens, in);
    ops.from_host(target_tensor, tg);
    ModelSaved saved;
    const double nll = model.forward(tokens, target_tensor, state, saved, ctx);
    result.nll += topo.sp->allreduce_sum(nll);
    result.count +=
        static_cast<int64_t>(topo.sp->allreduce_sum(static_cast<double>(saved.n_targets)));
  }
  return result;
}

}  // namespace tls
