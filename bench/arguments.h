// The benches' command lines: "--flag [value]" words read in turn. A flag whose value is missing
// or not a whole number, or a flag the bench does not know, ends the program with status 2 and
// one line naming it.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string>

#include "kernels/cpu/chunk_fused_kernels.h"
#include "layers/model_config.h"

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
  // The word after the current flag.
  std::string text() {
    if (i_ + 1 >= argc_) fail(flag_ + " needs a value");
    return argv_[++i_];
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
  // --chunk-path auto|gemm|avx2|avx512: the compressed attention's float32 path (the fused one on
  // the named lanes; kernels/cpu/chunk_fused_kernels.h). False when the current flag is another.
  bool chunk_path() {
    if (flag_ != "--chunk-path") return false;
    if (i_ + 1 >= argc_) fail(flag_ + " needs a value");
    const std::string word = argv_[++i_];
    using cpu::ChunkAttentionPath;
    using cpu::FusedLanes;
    if (word == "auto")
      cpu::set_chunk_attention_path(ChunkAttentionPath::automatic);
    else if (word == "gemm")
      cpu::set_chunk_attention_path(ChunkAttentionPath::gemm);
    else if (word == "avx2" || word == "avx512") {
      const bool wide = word == "avx512";
      cpu::set_chunk_attention_path(wide ? ChunkAttentionPath::fused_avx512
                                         : ChunkAttentionPath::fused_avx2);
      // A lane set the CPU lacks falls back to the automatic choice: refuse it instead.
      if (cpu::chunk_attention_fused_lanes(DType::f32) !=
          (wide ? FusedLanes::avx512 : FusedLanes::avx2))
        fail(flag_ + " " + word + ": this CPU does not have those lanes");
    } else
      fail(flag_ + " takes auto, gemm, avx2 or avx512, not '" + word + "'");
    return true;
  }
  // The float32 compressed-attention path in force, for the benches' header lines.
  static std::string chunk_path_description() {
    const auto lanes = cpu::chunk_attention_fused_lanes(DType::f32);
    if (!lanes) return "compressed attention: GEMM path";
    return std::string("compressed attention: fused path on ") +
           (*lanes == cpu::FusedLanes::avx512 ? "AVX-512" : "AVX2") + " lanes";
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
