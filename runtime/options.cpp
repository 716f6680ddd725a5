#include "runtime/options.h"

#include <boost/program_options.hpp>
#include <cctype>
#include <cmath>
#include <fstream>
#include <sstream>

#include "kernels/error.h"

namespace po = boost::program_options;

namespace tls {
namespace {

const char* const kUsage =
    "usage: tls_dist train --train-data F --save-dir D [model flags] [options]\n"
    "       tls_dist eval --checkpoint C --data F [--tokens-per-sample T] [--mem-len M]\n"
    "       tls_dist generate --checkpoint C --prompt TEXT [--max-new-bytes N]\n"
    "       tls_dist inspect C\n";

po::options_description common_options(RunOptions& o) {
  po::options_description d("General");
  d.add_options()("help,h", "print this help")(
      "config", po::value<std::string>(), "INI file of options (name = value); flags override it")(
      "seed", po::value<uint64_t>(&o.seed)->default_value(1),
      "random seed (init, dropout, sampling)")(
      "device", po::value<std::string>(&o.device)->default_value("cpu"), "cpu | cuda")(
      "precision", po::value<std::string>(&o.precision)->default_value("fp32"),
      "fp32 | fp64 | bf16 (float32 weights and optimizer, GEMMs on bf16 operands with float32 "
      "accumulation; on cpu a slower check of its numerics)")(
      "allow-tf32", po::bool_switch(&o.allow_tf32),
      "float32 GEMMs on TF32 tensor cores (--device cuda, --precision fp32)");
  return d;
}

po::options_description parallel_options(RunOptions& o) {
  po::options_description d("Parallel layout (world = dp x sp x tp; dp is what remains)");
  d.add_options()("tp", po::value<int>(&o.tp)->default_value(1),
                  "tensor-parallel ranks (heads split)")(
      "sp", po::value<int>(&o.sp)->default_value(1),
      "sequence-parallel ranks (block cut in slices)")(
      "activation-checkpointing", po::bool_switch(&o.training.activation_checkpointing),
      "keep each layer's input and recompute the rest in the backward, in sequence pieces of "
      "2048 tokens (peak memory about 3.6x lower at T=16384 for about 1.3x the step time)");
  return d;
}

po::options_description model_options(RunOptions& o) {
  ModelConfig& m = o.model;
  po::options_description d("Model (Transformer-LS)");
  d.add_options()("n-layer", po::value<int64_t>(&m.n_layer)->default_value(m.n_layer), "layers")(
      "d-model", po::value<int64_t>(&m.d_model)->default_value(m.d_model), "model width d")(
      "n-head", po::value<int64_t>(&m.n_head)->default_value(m.n_head), "attention heads")(
      "d-inner", po::value<int64_t>(&m.d_inner)->default_value(m.d_inner), "feed-forward width")(
      "chunk-size", po::value<int64_t>(&m.chunk_size)->default_value(m.chunk_size),
      "c: positions per compressed chunk")(
      "chunk-rank", po::value<int64_t>(&m.chunk_rank)->default_value(m.chunk_rank),
      "r: vectors per chunk and head")(
      "window-len", po::value<int64_t>(&m.window_len)->default_value(m.window_len),
      "w: sliding window")("mem-len", po::value<int64_t>(&m.mem_len)->default_value(m.mem_len),
                           "M: cached positions")(
      "tokens-per-sample",
      po::value<int64_t>(&m.tokens_per_sample)->default_value(m.tokens_per_sample),
      "T: block length")("pre-ln", po::bool_switch(&m.pre_ln),
                         "pre-LayerNorm layers (the paper's runs)")(
      "use-gelu", po::bool_switch(&m.use_gelu), "GELU instead of ReLU")(
      "use-bias", po::bool_switch(&m.use_bias), "biases in the attention projections")(
      "clamp-len", po::value<int64_t>(&m.clamp_len)->default_value(-1),
      "clamp window distances (-1: off)")("cpos-clamp-len",
                                          po::value<int64_t>(&m.cpos_clamp_len)->default_value(-1),
                                          "clamp chunk ids (-1: off)")(
      "dropout", po::value<double>(&m.dropout)->default_value(0.0), "dropout probability")(
      "emb-dropout", po::value<double>(&m.emb_dropout)->default_value(0.0),
      "embedding dropout probability");
  return d;
}

po::options_description training_options(RunOptions& o) {
  OptimizerSettings& a = o.training.optimizer;
  po::options_description d("Training");
  d.add_options()("train-data", po::value<std::string>(&o.train_data),
                  "training corpus (raw bytes)")(
      "valid-data", po::value<std::string>(&o.valid_data), "validation corpus")(
      "test-data", po::value<std::string>(&o.test_data), "test corpus (evaluated at the end)")(
      "save-dir", po::value<std::string>(&o.save_dir), "checkpoints and metrics.jsonl")(
      "finetune-from-model", po::value<std::string>(&o.finetune_from),
      "start from a checkpoint's weights")(
      "batch-size", po::value<int64_t>(&o.training.batch_size)->default_value(1),
      "rows of the global batch")("lr", po::value<double>(&a.lr)->default_value(2.5e-4),
                                  "learning rate")(
      "warmup-updates", po::value<int64_t>(&a.warmup_updates)->default_value(0),
      "linear warm-up updates")(
      "max-update", po::value<int64_t>(&o.max_update)->default_value(1000), "updates to train")(
      "weight-decay", po::value<double>(&a.weight_decay)->default_value(0.0),
      "decoupled weight decay")("clip-norm", po::value<double>(&a.clip_norm)->default_value(0.0),
                                "global-norm clipping (0: off)")(
      "adam-betas", po::value<std::string>()->default_value("(0.9, 0.999)"), "AdamW betas")(
      "adam-eps", po::value<double>(&a.eps)->default_value(1e-8), "AdamW epsilon")(
      "log-interval", po::value<int64_t>(&o.log_interval)->default_value(10),
      "log every N updates")("save-interval",
                             po::value<int64_t>(&o.save_interval)->default_value(0),
                             "checkpoint every N updates (0: at the end)")(
      "validate-interval", po::value<int64_t>(&o.validate_interval)->default_value(0),
      "validate every N updates (0: at the end)")(
      "valid-max-bytes", po::value<int64_t>(&o.valid_max_bytes)->default_value(0),
      "evaluate at most N validation bytes (0: all)")(
      "keep-last", po::value<int>(&o.keep_last)->default_value(3), "checkpoints to keep (0: all)")(
      "max-bad-steps", po::value<int64_t>(&o.max_bad_steps)->default_value(5),
      "consecutive non-finite steps before stopping");
  return d;
}

po::options_description eval_options(RunOptions& o) {
  po::options_description d("Evaluation");
  d.add_options()("checkpoint", po::value<std::string>(&o.checkpoint), "checkpoint file")(
      "data", po::value<std::string>(&o.data), "corpus to evaluate")(
      "tokens-per-sample", po::value<int64_t>(&o.eval_tokens)->default_value(0),
      "block length (0: the checkpoint's)")("mem-len",
                                            po::value<int64_t>(&o.eval_mem)->default_value(0),
                                            "cache length (0: the checkpoint's)");
  return d;
}

po::options_description generate_options(RunOptions& o) {
  po::options_description d("Generation");
  d.add_options()("checkpoint", po::value<std::string>(&o.checkpoint), "checkpoint file")(
      "prompt", po::value<std::string>(&o.prompt), "text to continue")(
      "max-new-bytes", po::value<int64_t>(&o.max_new_bytes)->default_value(200),
      "bytes to generate")("temperature", po::value<double>(&o.temperature)->default_value(1.0),
                           "sampling temperature (0: greedy)")(
      "top-k", po::value<int64_t>(&o.top_k)->default_value(0),
      "sample among the k likeliest bytes (0: all)");
  return d;
}

void parse_betas(const std::string& text, OptimizerSettings& a) {
  std::string s;
  for (char c : text)
    if (c != '(' && c != ')' && c != '[' && c != ']') s += c == ',' ? ' ' : c;
  std::istringstream in(s);
  double b1 = 0, b2 = 0;
  std::string rest;
  if (!(in >> b1 >> b2) || (in >> rest))
    throw Error("--adam-betas '" + text + "' must be two numbers, e.g. '(0.9, 0.999)'");
  a.beta1 = b1;
  a.beta2 = b2;
}

// Boost.Program_options (1.74) builds an error message by replacing placeholders such as
// %canonical_option% or %invalid_line% with the user's text, in a loop that never ends when that
// text itself holds the placeholder (found by tests/fuzz/options_fuzz: `--x%canonical_option%`
// and a config line holding `%invalid_line%` hung tls_dist). Boost's placeholders are
// %lower_case_name%; no option of tls_dist needs such text, so any of it is refused before Boost
// sees it (a list of Boost's names would miss the next one).
void refuse_boost_placeholders(const std::string& text, const std::string& where) {
  for (size_t open = text.find('%'); open != std::string::npos; open = text.find('%', open + 1)) {
    size_t end = open + 1;
    while (end < text.size() &&
           (std::islower(static_cast<unsigned char>(text[end])) || text[end] == '_'))
      ++end;
    if (end > open + 1 && end < text.size() && text[end] == '%')
      throw Error(where + " contains '" + text.substr(open, end - open + 1) +
                  "': text of the form %name% is not accepted");
  }
}

void require(bool ok, const std::string& message) {
  if (!ok) throw Error(message);
}

void validate_common(const RunOptions& o) {
  require(o.device == "cpu" || o.device == "cuda",
          "--device '" + o.device + "' must be cpu or cuda");
  require(o.precision == "fp32" || o.precision == "fp64" || o.precision == "bf16",
          "--precision '" + o.precision + "' must be fp32, fp64 or bf16");
  require(!o.allow_tf32 || o.device == "cuda", "--allow-tf32 needs --device cuda");
  require(!o.allow_tf32 || o.precision == "fp32",
          "--allow-tf32 applies to --precision fp32, not " + o.precision);
  require(o.tp >= 1, "--tp " + std::to_string(o.tp) + " must be at least 1");
  require(o.sp >= 1, "--sp " + std::to_string(o.sp) + " must be at least 1");
}

void validate_train(const RunOptions& o) {
  const OptimizerSettings& a = o.training.optimizer;
  require(!o.train_data.empty(), "--train-data is required for train");
  require(!o.save_dir.empty(), "--save-dir is required for train");
  require(o.training.batch_size >= 1,
          "--batch-size " + std::to_string(o.training.batch_size) + " must be at least 1");
  require(std::isfinite(a.lr) && a.lr > 0, "--lr " + std::to_string(a.lr) + " must be positive");
  require(a.warmup_updates >= 0, "--warmup-updates must not be negative");
  require(o.max_update >= 1,
          "--max-update " + std::to_string(o.max_update) + " must be at least 1");
  require(a.weight_decay >= 0, "--weight-decay must not be negative");
  require(a.clip_norm >= 0, "--clip-norm must not be negative (0 turns clipping off)");
  require(a.beta1 >= 0 && a.beta1 < 1 && a.beta2 >= 0 && a.beta2 < 1,
          "--adam-betas must lie in [0, 1)");
  require(a.eps > 0, "--adam-eps must be positive");
  require(o.log_interval >= 1, "--log-interval must be at least 1");
  require(o.save_interval >= 0, "--save-interval must not be negative");
  require(o.validate_interval >= 0, "--validate-interval must not be negative");
  require(o.keep_last >= 0, "--keep-last must not be negative");
  require(o.max_bad_steps >= 1, "--max-bad-steps must be at least 1");
  require(o.validate_interval == 0 || !o.valid_data.empty(),
          "--validate-interval needs --valid-data");
  if (o.finetune_from.empty()) o.model.validate();
}

// Later flags override earlier ones (as in fairseq): keeps the last occurrence of each --flag
// with the values that follow it.
std::vector<std::string> last_occurrences(int argc, const char* const* argv) {
  std::vector<std::vector<std::string>> groups;
  for (int i = 2; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg.rfind("--", 0) == 0 || groups.empty())
      groups.push_back({arg});
    else
      groups.back().push_back(arg);
  }
  auto name_of = [](const std::string& a) { return a.substr(0, a.find('=')); };
  std::vector<std::string> out;
  for (size_t g = 0; g < groups.size(); ++g) {
    const std::string& head = groups[g].front();
    bool overridden = false;
    if (head.rfind("--", 0) == 0)
      for (size_t later = g + 1; later < groups.size(); ++later)
        overridden |= name_of(groups[later].front()) == name_of(head);
    if (!overridden) out.insert(out.end(), groups[g].begin(), groups[g].end());
  }
  return out;
}

}  // namespace

RunOptions parse_options(int argc, const char* const* argv) {
  RunOptions o;
  const std::string command = argc >= 2 ? argv[1] : "";
  po::options_description all;
  all.add(common_options(o));
  if (command == "train") {
    all.add(parallel_options(o)).add(model_options(o)).add(training_options(o));
    o.command = Command::train;
  } else if (command == "eval") {
    all.add(parallel_options(o)).add(eval_options(o));
    o.command = Command::eval;
  } else if (command == "generate") {
    all.add(generate_options(o));
    o.command = Command::generate;
  } else if (command == "inspect") {
    o.command = Command::inspect;
    all.add_options()("checkpoint", po::value<std::string>(&o.checkpoint), "checkpoint file");
  } else if (command.empty() || command == "--help" || command == "-h" || command == "help") {
    RunOptions help;
    po::options_description every;
    every.add(common_options(help))
        .add(parallel_options(help))
        .add(model_options(help))
        .add(training_options(help))
        .add(eval_options(help));
    std::ostringstream text;
    text << kUsage << "\n" << every << generate_options(help);
    o.help_text = text.str();
    return o;
  } else {
    throw Error("unknown command '" + command + "': expected train, eval, generate or inspect");
  }

  for (int i = 2; i < argc; ++i)
    refuse_boost_placeholders(argv[i], "argument '" + std::string(argv[i]) + "'");
  po::positional_options_description positional;
  if (o.command == Command::inspect) positional.add("checkpoint", 1);
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(last_occurrences(argc, argv))
                  .options(all)
                  .positional(positional)
                  .run(),
              vm);
    if (vm.count("config")) {
      const std::string path = vm["config"].as<std::string>();
      std::ifstream file(path);
      if (!file) throw Error("--config " + path + ": cannot open the file");
      std::ostringstream text;
      text << file.rdbuf();
      refuse_boost_placeholders(text.str(), "--config " + path);
      std::istringstream in(text.str());
      try {
        po::store(po::parse_config_file(in, all, false),
                  vm);  // the command line, stored first, wins
      } catch (const po::error& e) {
        throw Error("--config " + path + ": " + e.what());
      }
    }
    po::notify(vm);
  } catch (const po::error& e) {
    throw Error(std::string(e.what()) + " (tls_dist " + command + " --help lists the options)");
  }
  if (vm.count("help")) {
    std::ostringstream text;
    text << kUsage << "\n" << all;
    o.command = Command::help;
    o.help_text = text.str();
    return o;
  }
  for (const char* flag : {"n-layer", "d-model", "n-head", "d-inner", "chunk-size", "chunk-rank",
                           "window-len", "mem-len", "tokens-per-sample", "pre-ln", "use-gelu",
                           "use-bias", "clamp-len", "cpos-clamp-len"})
    if (vm.count(flag) && !vm[flag].defaulted() &&
        !(vm[flag].value().type() == typeid(bool) && !vm[flag].as<bool>()))
      o.model_flags_given.push_back(flag);
  if (vm.count("adam-betas")) parse_betas(vm["adam-betas"].as<std::string>(), o.training.optimizer);
  o.training.seed = o.seed;

  validate_common(o);
  switch (o.command) {
    case Command::train:
      validate_train(o);
      break;
    case Command::eval:
      require(!o.checkpoint.empty(), "--checkpoint is required for eval");
      require(!o.data.empty(), "--data is required for eval");
      require(o.eval_tokens >= 0 && o.eval_mem >= 0,
              "--tokens-per-sample and --mem-len must not be negative");
      break;
    case Command::generate:
      require(!o.checkpoint.empty(), "--checkpoint is required for generate");
      require(o.max_new_bytes >= 0, "--max-new-bytes must not be negative");
      require(o.temperature >= 0 && std::isfinite(o.temperature),
              "--temperature must be a finite number >= 0");
      require(o.top_k >= 0 && o.top_k <= 256, "--top-k must lie in 0..256");
      break;
    case Command::inspect:
      require(!o.checkpoint.empty(), "inspect needs a checkpoint path");
      break;
    case Command::help:
      break;
  }
  return o;
}

}  // namespace tls
