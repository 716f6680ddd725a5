// ModelConfig::validate and describe: the constraints of docs/DESIGN.md section 1, checked once at
// start. Each refusal is one line naming the flag(s) and the rule, so the user can fix the
// command line without reading code.
#include "layers/model_config.h"

#include <sstream>

#include "kernels/error.h"

namespace tls {
namespace {

std::string flag(const char* name, int64_t value) {
  return std::string(name) + " " + std::to_string(value);
}

std::string flag(const char* name, double value) {
  std::ostringstream out;
  out << name << " " << value;
  return out.str();
}

void require_positive(const char* name, int64_t value) {
  if (value <= 0) throw Error(flag(name, value) + " must be positive");
}

void require_multiple(const char* name, int64_t value, const char* of_name, int64_t of) {
  if (value % of != 0) {
    throw Error(flag(name, value) + " must be a multiple of " + flag(of_name, of));
  }
}

void require_probability(const char* name, double value) {
  if (!(value >= 0.0 && value < 1.0)) throw Error(flag(name, value) + " must be in [0, 1)");
}

}  // namespace

void ModelConfig::validate() const {
  require_positive("--vocab-size", vocab_size);
  require_positive("--n-layer", n_layer);
  require_positive("--d-model", d_model);
  require_positive("--n-head", n_head);
  require_positive("--d-inner", d_inner);
  require_positive("--chunk-size", chunk_size);
  require_positive("--chunk-rank", chunk_rank);
  require_positive("--window-len", window_len);
  require_positive("--mem-len", mem_len);
  require_positive("--tokens-per-sample", tokens_per_sample);

  require_multiple("--d-model", d_model, "--n-head", n_head);
  if (d_model % 2 != 0) throw Error(flag("--d-model", d_model) + " must be even");
  require_multiple("--tokens-per-sample", tokens_per_sample, "--chunk-size", chunk_size);
  require_multiple("--mem-len", mem_len, "--chunk-size", chunk_size);
  if (tokens_per_sample > window_len && tokens_per_sample % window_len != 0) {
    throw Error(flag("--tokens-per-sample", tokens_per_sample) + " must be a multiple of " +
                flag("--window-len", window_len) + " or at most it");
  }
  if (mem_len < window_len) {
    throw Error(flag("--mem-len", mem_len) + " must be at least " +
                flag("--window-len", window_len));
  }
  require_probability("--dropout", dropout);
  require_probability("--emb-dropout", emb_dropout);
}

std::string describe(const ModelConfig& c) {
  std::ostringstream out;
  out << "n_layer " << c.n_layer << ", d_model " << c.d_model << ", n_head " << c.n_head;
  if (c.n_head > 0) out << " (d_head " << c.d_head() << ")";
  out << ", d_inner " << c.d_inner << ", chunk_size " << c.chunk_size << ", chunk_rank "
      << c.chunk_rank << ", window_len " << c.window_len << ", mem_len " << c.mem_len
      << ", tokens_per_sample " << c.tokens_per_sample << ", vocab_size " << c.vocab_size << ", "
      << (c.pre_ln ? "pre-LN" : "post-LN") << ", " << (c.use_gelu ? "GELU" : "ReLU") << ", "
      << (c.use_bias ? "proj bias" : "no proj bias") << ", clamp_len "
      << (c.clamp_len > 0 ? std::to_string(c.clamp_len) : std::string("off")) << ", cpos_clamp_len "
      << (c.cpos_clamp_len > 0 ? std::to_string(c.cpos_clamp_len) : std::string("off"))
      << ", dropout " << c.dropout << ", emb_dropout " << c.emb_dropout;
  return out.str();
}

void ModelConfig::validate_layout(int tp, int sp, SpOrder order) const {
  auto fail = [](const std::string& m) { throw Error(m); };
  const std::string tps = "--tp " + std::to_string(tp), sps = "--sp " + std::to_string(sp);
  if (tp < 1) fail(tps + " must be at least 1");
  if (sp < 1) fail(sps + " must be at least 1");
  if (d_model % tp != 0) fail(tps + " must divide --d-model " + std::to_string(d_model));
  if (n_head % tp != 0) fail(tps + " must divide --n-head " + std::to_string(n_head));
  if (d_inner % tp != 0) fail(tps + " must divide --d-inner " + std::to_string(d_inner));
  if (sp > 1) {
    if (mem_len != tokens_per_sample)
      fail(sps + " needs --mem-len " + std::to_string(mem_len) + " equal to --tokens-per-sample " +
           std::to_string(tokens_per_sample));
    if (tokens_per_sample % sp != 0)
      fail(sps + " must divide --tokens-per-sample " + std::to_string(tokens_per_sample));
    const int64_t slice = tokens_per_sample / sp;
    if (slice < window_len)
      fail(sps + " cuts --tokens-per-sample " + std::to_string(tokens_per_sample) +
           " into slices of " + std::to_string(slice) + ", shorter than --window-len " +
           std::to_string(window_len));
    if (slice % chunk_size != 0)
      fail(sps + " cuts --tokens-per-sample " + std::to_string(tokens_per_sample) +
           " into slices of " + std::to_string(slice) + ", not a multiple of --chunk-size " +
           std::to_string(chunk_size));
  }
  std::string why;
  if (order == SpOrder::zigzag && !zigzag_fits(sp, &why)) fail("--sp-layout zigzag: " + why);
}

bool ModelConfig::zigzag_fits(int sp, std::string* why) const {
  std::string reason;
  const int64_t half = tokens_per_sample / (2 * static_cast<int64_t>(sp));
  const std::string cut = "--tokens-per-sample " + std::to_string(tokens_per_sample) +
                          " over --sp " + std::to_string(sp) + " gives half-slices of " +
                          std::to_string(half);
  if (sp < 2)
    reason = "needs --sp of at least 2";
  else if (tokens_per_sample % (2 * static_cast<int64_t>(sp)) != 0)
    reason = "--tokens-per-sample " + std::to_string(tokens_per_sample) +
             " must be a multiple of 2 x --sp " + std::to_string(sp);
  else if (half < window_len)
    reason = cut + ", shorter than --window-len " + std::to_string(window_len);
  else if (half % chunk_size != 0)
    reason = cut + ", not a multiple of --chunk-size " + std::to_string(chunk_size);
  if (why) *why = reason;
  return reason.empty();
}

void validate_batch(int64_t batch_size, int dp) {
  if (batch_size < 1 || dp < 1 || batch_size % dp != 0)
    throw Error("--batch-size " + std::to_string(batch_size) +
                " must be a positive multiple of the data-parallel size " + std::to_string(dp) +
                " (world / (tp x sp))");
}

}  // namespace tls
