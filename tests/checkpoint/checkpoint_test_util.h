// Shared by the checkpoint suites: a tiny model, deterministic non-trivial values for every
// tensor a checkpoint holds, bitwise comparison, a scratch directory and the message of an Error.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include "checkpoint/checkpoint_contents.h"
#include "kernels/error.h"

namespace tls::testing {

inline ModelConfig tiny_checkpoint_model() {
  ModelConfig cfg;
  cfg.n_layer = 2;
  cfg.d_model = 16;
  cfg.n_head = 2;
  cfg.d_inner = 32;
  cfg.chunk_size = 4;
  cfg.chunk_rank = 2;
  cfg.window_len = 8;
  cfg.mem_len = 16;
  cfg.tokens_per_sample = 16;
  return cfg;
}

// Fills x with values that use every bit of the mantissa, distinct per `salt`.
inline void fill_pattern(Ops& ops, Tensor& x, double salt, bool positive = false) {
  std::vector<double> v(static_cast<size_t>(x.numel()));
  for (size_t i = 0; i < v.size(); ++i) {
    const double s = std::sin(0.7 * static_cast<double>(i) + salt) / 3.0;
    v[i] = positive ? s * s + 1e-3 : s;
  }
  ops.from_host(x, v);
}

// Fills every parameter, moment and cache of `c` (salt distinct per tensor).
inline void fill_contents(Ops& ops, CheckpointContents& c, double salt) {
  for (size_t i = 0; i < c.params.size(); ++i) {
    fill_pattern(ops, c.params[i]->value, salt + 10.0 * static_cast<double>(i));
    if (c.has_optimizer()) {
      fill_pattern(ops, (*c.exp_avg)[i], salt + 10.0 * static_cast<double>(i) + 3);
      fill_pattern(ops, (*c.exp_avg_sq)[i], salt + 10.0 * static_cast<double>(i) + 6, true);
    }
  }
  if (c.caches == nullptr) return;
  for (size_t l = 0; l < c.caches->size(); ++l)
    fill_pattern(ops, (*c.caches)[l], salt + 1000.0 + static_cast<double>(l));
}

// A model with its optimizer and carried state: everything a checkpoint holds.
struct FullModel {
  TransformerLSModel model;
  AdamW optimizer;
  ModelState state;
  TrainSettings settings;

  FullModel(Ops& ops, const ModelConfig& cfg, DType dtype, int64_t batch)
      : model(ops, cfg, dtype),
        optimizer(ops, model.parameters(), {}),
        state(model.initial_state(batch)) {
    settings.batch_size = batch;
    settings.seed = 17;
    settings.optimizer.lr = 1e-3;
    settings.optimizer.warmup_updates = 4;
    settings.optimizer.clip_norm = 0.5;
  }
  CheckpointContents contents(int64_t step = 0) {
    return checkpoint_contents(model, &optimizer, &state, step, settings);
  }
};

inline bool same_bits(const Tensor& a, const Tensor& b) {
  return a.bytes() == b.bytes() && a.dtype() == b.dtype() &&
         std::memcmp(a.raw(), b.raw(), a.bytes()) == 0;
}

// A fresh directory under the system temp directory, removed with everything in it.
class TempDir {
 public:
  TempDir() {
    static std::atomic<int> counter{0};
    path_ = (std::filesystem::temp_directory_path() /
             ("tls_ckpt_" + std::to_string(::getpid()) + "_" + std::to_string(counter++)))
                .string();
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

inline std::string file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

template <class F>
std::string error_of(F f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace tls::testing
