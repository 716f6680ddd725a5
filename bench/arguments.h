// The benches' command lines: "--flag [value]" words read in turn. A flag whose value is missing
// or not a whole number, or a flag the bench does not know, ends the program with status 2 and
// one line naming it.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string>

#include "runtime/config.h"

namespace tls::bench {

class Arguments {
 public:
  Arguments(std::string program, int argc, char** argv)
      : program_(std::move(program)), argc_(argc), argv_(argv) {}

  // The next flag, or false after the last word.
  bool next(std::string& flag) {
    if (++i_ >= argc_) return false;
    flag_ = flag = argv_[i_];
    return true;
  }
  // The whole number after the current flag.
  int64_t value() {
    if (i_ + 1 >= argc_) fail(flag_ + " needs a value");
    const char* word = argv_[++i_];
    char* end = nullptr;
    const long long v = std::strtoll(word, &end, 10);
    if (end == word || *end != '\0') fail(flag_ + " takes a whole number, not '" + word + "'");
    return v;
  }
  // The model-shape flags of the long-sequence benches: --d-model (d_inner = 4 d), --heads,
  // --layers, --window, --chunk. False when the current flag is none of them.
  bool model_shape(ModelConfig& cfg) {
    if (flag_ == "--d-model")
      cfg.d_model = value(), cfg.d_inner = 4 * cfg.d_model;
    else if (flag_ == "--heads")
      cfg.n_head = value();
    else if (flag_ == "--layers")
      cfg.n_layer = value();
    else if (flag_ == "--window")
      cfg.window_len = value();
    else if (flag_ == "--chunk")
      cfg.chunk_size = value();
    else
      return false;
    return true;
  }
  [[noreturn]] void unknown() const { fail("unknown option " + flag_); }
  [[noreturn]] void fail(const std::string& why) const {
    std::fprintf(stderr, "%s: %s\n", program_.c_str(), why.c_str());
    std::exit(2);
  }

 private:
  std::string program_, flag_;
  int argc_;
  char** argv_;
  int i_ = 0;
};

}  // namespace tls::bench
