// The command line of tls_dist (docs/DESIGN.md section 6): `tls_dist train|eval|generate|inspect`,
// flags named like the reference's fairseq flags, an optional INI --config file that the command
// line overrides, and one validation pass before any work whose errors name the option. The
// options themselves are the rows of runtime/option_table.h; RunOptions holds their values.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "layers/model_config.h"
#include "training/trainer.h"

namespace tls {

enum class Command { train, eval, generate, inspect, help };
const char* command_name(Command c);

struct RunOptions {
  Command command = Command::help;
  std::string help_text;  // for Command::help
  bool help = false;      // --help
  std::string config;     // --config: the INI file read under the command line

  // The flags the user set explicitly, on the command line or in the INI file (a switch only
  // when on): a model flag given for a run that starts from a checkpoint must agree with it.
  std::vector<std::string> flags_given;
  bool given(const std::string& flag) const;

  // Model (train; eval/generate take it from the checkpoint).
  ModelConfig model;

  // Data and training.
  std::string train_data, valid_data, test_data;
  std::string save_dir;
  std::string finetune_from;
  TrainSettings training;
  int64_t max_update = 1000;
  int64_t log_interval = 10;
  int64_t save_interval = 0;      // 0: only at the end
  int64_t validate_interval = 0;  // 0: only at the end
  int64_t valid_max_bytes = 0;    // 0: the whole validation file
  int keep_last = 3;
  int64_t max_bad_steps = 5;
  double stall_timeout = 0;  // seconds without a finished update; 0: automatic (stall_watchdog.h)

  // Parallel layout and device.
  int tp = 1, sp = 1;
  std::string sp_layout = "auto";  // zigzag | contiguous | auto (runtime/run_setup.h)
  std::string device = "cpu";
  std::string precision = "fp32";
  bool allow_tf32 = false;  // float32 GEMMs on TF32 tensor cores (--device cuda, fp32)

  // eval / generate / inspect.
  std::string checkpoint;
  std::string data;
  int64_t eval_tokens = 0, eval_mem = 0;  // 0: the checkpoint's
  std::string prompt;
  int64_t max_new_bytes = 200;
  double temperature = 1.0;
  int64_t top_k = 0;
  uint64_t seed = 1;
};

// Parses argv (argv[1] is the command). Throws tls::Error with one line naming the option and
// the rule for an unknown flag, a malformed value, a --config file that does not parse, or an
// option that contradicts another.
RunOptions parse_options(int argc, const char* const* argv);

// parse_options in its two steps: reading the values (errors: an unknown flag, a malformed value
// or --config file), then checking each against its rule and the others.
RunOptions read_options(int argc, const char* const* argv);
void validate_options(const RunOptions& o);

}  // namespace tls
