// The rows of tls_dist's options (docs/DESIGN.md section 6): one per option and command set.
// The flags are named like the reference's fairseq flags. The defaults are those of the settings
// structs (tests/runtime/options_test checks that they agree), except that a switch is off unless
// given: ModelConfig's library default is pre-LN with GELU, tls_dist train's is neither.
#include "runtime/option_table.h"

#include <sstream>

#include "kernels/error.h"

namespace tls {
namespace {

using R = RunOptions;
using M = ModelConfig;
using S = TrainSettings;
using A = OptimizerSettings;
constexpr auto kAgree = FromCheckpoint::must_agree;
constexpr auto kTrainEval = kTrain | kEval;
constexpr auto kWithCheckpoint = kEval | kGenerate | kInspect;

// --adam-betas takes fairseq's spelling, a Python tuple: '(0.9, 0.999)'.
void apply_betas(const std::string& text, RunOptions& o) {
  std::string s;
  for (char c : text)
    if (c != '(' && c != ')' && c != '[' && c != ']') s += c == ',' ? ' ' : c;
  std::istringstream in(s);
  double b1 = 0, b2 = 0;
  std::string rest;
  if (!(in >> b1 >> b2) || (in >> rest))
    throw Error("--adam-betas '" + text + "' must be two numbers, e.g. '(0.9, 0.999)'");
  if (!(b1 >= 0 && b1 < 1 && b2 >= 0 && b2 < 1))
    throw Error("--adam-betas '" + text + "' must lie in [0, 1)");
  o.training.optimizer.beta1 = b1;
  o.training.optimizer.beta2 = b2;
}

std::string show_betas(const RunOptions& o) {
  std::ostringstream out;
  out << '(' << o.training.optimizer.beta1 << ", " << o.training.optimizer.beta2 << ')';
  return out.str();
}

std::vector<OptionRow> rows() {
  return {
      {.flag = "help",
       .group = Group::general,
       .commands = kEveryCommand,
       .help = "print this help",
       .binding = field<&R::help>(),
       .letter = 'h'},
      {"config", Group::general, kEveryCommand,
       "INI file of options (name = value); flags override it", field<&R::config>()},
      {"seed", Group::general, kEveryCommand, "random seed (init, dropout, sampling)",
       field<&R::seed>(1)},
      {"device", Group::general, kEveryCommand, "cpu | cuda", field<&R::device>("cpu"),
       one_of({"cpu", "cuda"})},
      {"precision", Group::general, kEveryCommand,
       "fp32 | fp64 | bf16 (float32 weights and optimizer, GEMMs on bf16 operands with float32 "
       "accumulation; on cpu a slower check of its numerics)",
       field<&R::precision>("fp32"), one_of({"fp32", "fp64", "bf16"})},
      {"allow-tf32", Group::general, kEveryCommand,
       "float32 GEMMs on TF32 tensor cores (--device cuda, --precision fp32)",
       field<&R::allow_tf32>()},

      {"tp", Group::parallel, kTrainEval, "tensor-parallel ranks (heads split)", field<&R::tp>(1),
       at_least(1)},
      {"sp", Group::parallel, kTrainEval, "sequence-parallel ranks (block cut in slices)",
       field<&R::sp>(1), at_least(1)},
      {"sp-layout", Group::parallel, kTrainEval,
       "zigzag | contiguous: how the block's positions are dealt to the sp ranks (zigzag: rank s "
       "holds slices s and 2sp-1-s of 2sp, the same attention work on every rank; auto: zigzag "
       "when sp > 1 and each half-slice T/(2sp) is at least --window-len and a multiple of "
       "--chunk-size)",
       field<&R::sp_layout>("auto"), one_of({"auto", "zigzag", "contiguous"})},
      {"activation-checkpointing", Group::parallel, kTrainEval,
       "keep each layer's input and recompute the rest in the backward, in sequence pieces of "
       "2048 tokens (peak memory about 3.6x lower at T=16384 for about 1.3x the step time)",
       field<&R::training, &S::activation_checkpointing>()},

      // The model's own rules (ModelConfig::validate) check these, as they check a checkpoint's.
      {"n-layer", Group::model, kTrain, "layers", field<&R::model, &M::n_layer>(2), any_value(),
       kAgree},
      {"d-model", Group::model, kTrain, "model width d", field<&R::model, &M::d_model>(64),
       any_value(), kAgree},
      {"n-head", Group::model, kTrain, "attention heads", field<&R::model, &M::n_head>(4),
       any_value(), kAgree},
      {"d-inner", Group::model, kTrain, "feed-forward width", field<&R::model, &M::d_inner>(256),
       any_value(), kAgree},
      {"chunk-size", Group::model, kTrain, "c: positions per compressed chunk",
       field<&R::model, &M::chunk_size>(8), any_value(), kAgree},
      {"chunk-rank", Group::model, kTrain, "r: vectors per chunk and head",
       field<&R::model, &M::chunk_rank>(1), any_value(), kAgree},
      {"window-len", Group::model, kTrain, "w: sliding window",
       field<&R::model, &M::window_len>(16), any_value(), kAgree},
      {"mem-len", Group::model, kTrain, "M: cached positions", field<&R::model, &M::mem_len>(64),
       any_value(), FromCheckpoint::length},
      {"tokens-per-sample", Group::model, kTrain, "T: block length",
       field<&R::model, &M::tokens_per_sample>(64), any_value(), FromCheckpoint::length},
      {"pre-ln", Group::model, kTrain, "pre-LayerNorm layers (the paper's runs)",
       field<&R::model, &M::pre_ln>(), any_value(), kAgree},
      {"use-gelu", Group::model, kTrain, "GELU instead of ReLU", field<&R::model, &M::use_gelu>(),
       any_value(), kAgree},
      {"use-bias", Group::model, kTrain, "biases in the attention projections",
       field<&R::model, &M::use_bias>(), any_value(), kAgree},
      {"clamp-len", Group::model, kTrain, "clamp window distances (-1: off)",
       field<&R::model, &M::clamp_len>(-1), any_value(), kAgree},
      {"cpos-clamp-len", Group::model, kTrain, "clamp chunk ids (-1: off)",
       field<&R::model, &M::cpos_clamp_len>(-1), any_value(), kAgree},
      {"dropout", Group::model, kTrain, "dropout probability", field<&R::model, &M::dropout>(0.0),
       any_value(), FromCheckpoint::run_value},
      {"emb-dropout", Group::model, kTrain, "embedding dropout probability",
       field<&R::model, &M::emb_dropout>(0.0), any_value(), FromCheckpoint::run_value},

      {"train-data", Group::data, kTrain, "training corpus (raw bytes)", field<&R::train_data>(),
       required_by(kTrain)},
      {"valid-data", Group::data, kTrain, "validation corpus", field<&R::valid_data>()},
      {"test-data", Group::data, kTrain, "test corpus (evaluated at the end)",
       field<&R::test_data>()},

      {"batch-size", Group::training, kTrain, "rows of the global batch",
       field<&R::training, &S::batch_size>(1), at_least(1)},
      {"update-freq", Group::training, kTrain,
       "blocks per update: their gradients are summed, the memory carried between them",
       field<&R::training, &S::update_freq>(1), at_least(1)},
      {"lr", Group::training, kTrain, "learning rate",
       field<&R::training, &S::optimizer, &A::lr>(2.5e-4), positive()},
      {"warmup-updates", Group::training, kTrain, "linear warm-up updates",
       field<&R::training, &S::optimizer, &A::warmup_updates>(0), at_least(0)},
      {"max-update", Group::training, kTrain, "updates to train", field<&R::max_update>(1000),
       at_least(1)},
      {"weight-decay", Group::training, kTrain, "decoupled weight decay",
       field<&R::training, &S::optimizer, &A::weight_decay>(0.0), at_least(0)},
      {"clip-norm", Group::training, kTrain, "global-norm clipping (0: off)",
       field<&R::training, &S::optimizer, &A::clip_norm>(0.0), at_least(0)},
      {"adam-betas", Group::training, kTrain, "AdamW betas",
       TextField{&apply_betas, &show_betas, "(0.9, 0.999)"}},
      {"adam-eps", Group::training, kTrain, "AdamW epsilon",
       field<&R::training, &S::optimizer, &A::eps>(1e-8), positive()},
      {"log-interval", Group::training, kTrain, "log every N updates", field<&R::log_interval>(10),
       at_least(1)},
      {"validate-interval", Group::training, kTrain, "validate every N updates (0: at the end)",
       field<&R::validate_interval>(0), at_least(0)},
      {"valid-max-bytes", Group::training, kTrain, "evaluate at most N validation bytes (0: all)",
       field<&R::valid_max_bytes>(0)},
      {"max-bad-steps", Group::training, kTrain, "consecutive non-finite steps before stopping",
       field<&R::max_bad_steps>(5), at_least(1)},
      {"stall-timeout", Group::training, kTrain,
       "end the job when no update finishes in S seconds, a peer rank being lost "
       "(0: 20 x the slowest update, at least 300)",
       field<&R::stall_timeout>(0.0), at_least(0)},

      {"save-dir", Group::checkpoints, kTrain, "checkpoints and metrics.jsonl",
       field<&R::save_dir>(), required_by(kTrain)},
      {"save-interval", Group::checkpoints, kTrain, "checkpoint every N updates (0: at the end)",
       field<&R::save_interval>(0), at_least(0)},
      {"keep-last", Group::checkpoints, kTrain, "checkpoints to keep (0: all)",
       field<&R::keep_last>(3), at_least(0)},
      {"finetune-from-model", Group::checkpoints, kTrain, "start from a checkpoint's weights",
       field<&R::finetune_from>()},
      // tls_dist inspect C: the checkpoint is inspect's one argument.
      {.flag = "checkpoint",
       .group = Group::checkpoints,
       .commands = kWithCheckpoint,
       .help = "checkpoint file",
       .binding = field<&R::checkpoint>(),
       .rule = required_by(kWithCheckpoint),
       .positional = kInspect},

      // eval's own block and cache lengths: the paper evaluates with longer memory than it
      // trains with (docs/DESIGN.md section 4).
      {"data", Group::evaluation, kEval, "corpus to evaluate", field<&R::data>(),
       required_by(kEval)},
      {"tokens-per-sample", Group::evaluation, kEval, "block length (0: the checkpoint's)",
       field<&R::eval_tokens>(0), at_least(0)},
      {"mem-len", Group::evaluation, kEval, "cache length (0: the checkpoint's)",
       field<&R::eval_mem>(0), at_least(0)},

      {"prompt", Group::generation, kGenerate, "text to continue", field<&R::prompt>()},
      {"max-new-bytes", Group::generation, kGenerate, "bytes to generate",
       field<&R::max_new_bytes>(200), at_least(0)},
      {"temperature", Group::generation, kGenerate, "sampling temperature (0: greedy)",
       field<&R::temperature>(1.0), at_least(0)},
      {"top-k", Group::generation, kGenerate, "sample among the k likeliest bytes (0: all)",
       field<&R::top_k>(0), within(0, 256)},
  };
}

}  // namespace

const char* caption(Group group) {
  switch (group) {
    case Group::general:
      return "General";
    case Group::parallel:
      return "Parallel layout (world = dp x sp x tp; dp is what remains)";
    case Group::model:
      return "Model (Transformer-LS)";
    case Group::data:
      return "Data";
    case Group::training:
      return "Training";
    case Group::checkpoints:
      return "Checkpoints";
    case Group::evaluation:
      return "Evaluation";
    case Group::generation:
      return "Generation";
  }
  return "";
}

const std::vector<OptionRow>& option_table() {
  static const std::vector<OptionRow> table = rows();
  return table;
}

}  // namespace tls
