#include "training/generator.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "kernels/counter_rng.h"
#include "kernels/error.h"

namespace tls {
namespace {

// Runs `block` (<= T bytes, right-padded) against state; returns the log-probabilities after
// its last real byte. When commit, state advances past the block.
std::vector<double> run_block(TransformerLSModel& model, ModelState& state,
                              const std::vector<int32_t>& block, bool commit) {
  Ops& ops = model.ops();
  const int64_t T = model.config().tokens_per_sample, V = model.config().vocab_size;
  std::vector<double> in(static_cast<size_t>(T), 0.0), tg(static_cast<size_t>(T), -1.0);
  for (size_t i = 0; i < block.size(); ++i) in[i] = block[i];
  Tensor tokens = ops.empty({1, T}, DType::i32), targets = ops.empty({1, T}, DType::i32);
  ops.from_host(tokens, in);
  ops.from_host(targets, tg);
  ModelState scratch = state;  // forward replaces the cache handles, never the tensors
  ModelSaved saved;
  model.forward(tokens, targets, commit ? state : scratch, saved, PassContext());
  std::vector<double> all = ops.to_host(saved.logprobs);
  const size_t last = block.empty() ? 0 : block.size() - 1;
  return std::vector<double>(all.begin() + static_cast<int64_t>(last * V),
                             all.begin() + static_cast<int64_t>((last + 1) * V));
}

int32_t sample(const std::vector<double>& logprobs, const SamplingSettings& s, uint64_t draw) {
  const int64_t V = static_cast<int64_t>(logprobs.size());
  std::vector<int32_t> order(static_cast<size_t>(V));
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(),
            [&](int32_t a, int32_t b) { return logprobs[a] > logprobs[b]; });
  if (s.temperature <= 0) return order.front();
  const int64_t k = s.top_k > 0 ? std::min(s.top_k, V) : V;
  std::vector<double> weights(static_cast<size_t>(k));
  for (int64_t i = 0; i < k; ++i)
    weights[static_cast<size_t>(i)] =
        std::exp((logprobs[order[i]] - logprobs[order[0]]) / s.temperature);
  const double total = std::accumulate(weights.begin(), weights.end(), 0.0);
  double u = rng::uniform(rng::stream_key(s.seed, draw, rng::name_id("generate")), 0) * total;
  for (int64_t i = 0; i < k; ++i) {
    u -= weights[static_cast<size_t>(i)];
    if (u <= 0) return order[static_cast<size_t>(i)];
  }
  return order[static_cast<size_t>(k - 1)];
}

}  // namespace

std::string generate_text(TransformerLSModel& model, const std::string& prompt,
                          const SamplingSettings& settings) {
  if (!model.topology().is_single()) throw Error("generate runs on one process");
  const int64_t T = model.config().tokens_per_sample;
  ModelState state = model.initial_state(1);
  std::vector<int32_t> block;
  // A full block is committed to the caches only when the next byte needs room, so the current
  // block always holds the byte to predict from.
  auto append = [&](int32_t byte) {
    if (static_cast<int64_t>(block.size()) == T) {
      run_block(model, state, block, true);
      block.clear();
    }
    block.push_back(byte);
  };
  for (unsigned char ch : prompt) append(ch);
  if (block.empty()) block.push_back('\n');  // an empty prompt: condition on a newline
  std::string out;
  for (int64_t n = 0; n < settings.max_new_bytes; ++n) {
    const std::vector<double> lp = run_block(model, state, block, false);
    const int32_t next = sample(lp, settings, static_cast<uint64_t>(n));
    out.push_back(static_cast<char>(next));
    append(next);
  }
  return out;
}

}  // namespace tls
