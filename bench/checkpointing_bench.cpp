// Activation checkpointing's trade: the same model trained with and without
// --activation-checkpointing, side by side in one process. Prints each one's peak bytes of host
// tensors during a step (kernels/tensor.h: exact, per step) and its fastest step from interleaved
// rounds (a slow spell of a shared machine falls on both alike), and the two ratios. Usage:
//   checkpointing_bench [--tokens 16384] [--d-model 256] [--heads 4] [--layers 2] [--window 256]
//                       [--chunk 16] [--piece 0] [--rounds 3]
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "bench/arguments.h"
#include "bench/model_flops.h"
#include "bench/training_step.h"
#include "kernels/cpu/blas_core.h"

using namespace tls;

namespace {
constexpr double kRoundSeconds = 3.0;  // per variant and round
}  // namespace

int main(int argc, char** argv) {
  tls::cpu::ensure_fitting_blas_core(argv);  // may re-execute: first
  ModelConfig cfg = bench::long_sequence_config(2);
  int64_t tokens = 16384, rounds = 3, piece = 0;
  bench::Arguments args("checkpointing_bench", argc, argv);
  for (std::string a; args.next(a);) {
    if (args.model_shape(cfg)) continue;
    if (a == "--tokens")
      tokens = args.value();
    else if (a == "--piece")
      piece = args.value();
    else if (a == "--rounds")
      rounds = args.value();
    else
      args.unknown();
  }
  if (rounds < 1 || piece < 0) {
    std::fprintf(stderr, "checkpointing_bench: --rounds must be at least 1, --piece at least 0\n");
    return 2;
  }
  try {
    auto ops = make_cpu_ops();
    cfg.tokens_per_sample = cfg.mem_len = tokens;
    cfg.validate();
    std::printf(
        "# checkpointing_bench: T = M = %lld, d_model %lld, n_head %lld, n_layer %lld, d_inner "
        "%lld, window %lld, chunk %lld, rank 1, B = 1, float32, recompute piece %s\n",
        static_cast<long long>(tokens), static_cast<long long>(cfg.d_model),
        static_cast<long long>(cfg.n_head), static_cast<long long>(cfg.n_layer),
        static_cast<long long>(cfg.d_inner), static_cast<long long>(cfg.window_len),
        static_cast<long long>(cfg.chunk_size),
        piece == 0 ? "automatic" : std::to_string(piece).c_str());
    std::printf("# %s\n", tls::cpu::blas_core_description().c_str());
    std::printf(
        "# %lld interleaved rounds, each running both for at least one step and %.1f s; peak: "
        "the step's peak of live tensors above what the other model holds\n",
        static_cast<long long>(rounds), kRoundSeconds);
    struct Variant {
      const char* name;
      std::unique_ptr<bench::TrainingStep> step;
      double peak = 0, fastest = 0;
      int64_t steps = 0;
    };
    std::vector<Variant> variants;
    for (bool checkpointing : {false, true}) {
      Variant v{checkpointing ? "activation checkpointing" : "plain", nullptr};
      const int64_t held_before = host_tensor_memory().live;
      v.step =
          std::make_unique<bench::TrainingStep>(*ops, cfg, DType::f32, 1, checkpointing, piece);
      reset_host_tensor_peak();
      v.step->run();
      v.peak = static_cast<double>(host_tensor_memory().peak - held_before);
      variants.push_back(std::move(v));
    }
    for (int64_t r = 0; r < rounds; ++r)
      for (Variant& v : variants) {
        const bench::TrainingStep::Times t = v.step->time(1, nullptr, false, kRoundSeconds);
        v.fastest = v.steps == 0 ? t.fastest : std::min(v.fastest, t.fastest);
        v.steps += t.steps;
      }
    std::printf(
        "| variant | steps | step (s), fastest | time ratio | peak tensors (MiB) | KiB/token | "
        "memory cut |\n|---|---|---|---|---|---|---|\n");
    for (const Variant& v : variants)
      std::printf("| %s | %lld | %.3f | %.3f | %.1f | %.2f | %.2fx |\n", v.name,
                  static_cast<long long>(v.steps), v.fastest, v.fastest / variants[0].fastest,
                  v.peak / (1 << 20), v.peak / static_cast<double>(tokens) / 1024,
                  variants[0].peak / v.peak);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "checkpointing_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
