// Cost against length (issue 7, targets 2 and 3): one process trains the same model at block
// lengths T = M from 2048 up (doubling), and prints per T the time per token, the model FLOPs per
// token (bench/model_flops.h: the compressed part grows with T/c), both as ratios to the first
// row, and the peak bytes of host tensors per token during a step (runtime/tensor.h: exact, and
// per step, unlike the resident set size). Usage:
//   length_bench [--from 2048] [--to 32768] [--d-model 256] [--heads 4] [--layers 2]
//                [--window 256] [--chunk 16] [--steps 2] [--activation-checkpointing]
//                [--no-warmup]   (time the first step too: for single steps at very long T)
#include <cstdio>
#include <cstdlib>
#include <string>

#include "bench/model_flops.h"
#include "bench/training_step.h"
#include "kernels/cpu/blas_core.h"

using namespace tls;

int main(int argc, char** argv) {
  tls::cpu::ensure_fitting_blas_core(argv);  // may re-execute: first
  ModelConfig cfg = bench::long_sequence_config(2);
  int64_t from = 2048, to = 32768, steps = 2;
  bool checkpointing = false, warmup = true;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> int64_t {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "length_bench: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return std::atoll(argv[++i]);
    };
    if (a == "--from")
      from = next();
    else if (a == "--to")
      to = next();
    else if (a == "--d-model")
      cfg.d_model = next(), cfg.d_inner = 4 * cfg.d_model;
    else if (a == "--heads")
      cfg.n_head = next();
    else if (a == "--layers")
      cfg.n_layer = next();
    else if (a == "--window")
      cfg.window_len = next();
    else if (a == "--chunk")
      cfg.chunk_size = next();
    else if (a == "--steps")
      steps = next();
    else if (a == "--activation-checkpointing")
      checkpointing = true;
    else if (a == "--no-warmup")
      warmup = false;
    else {
      std::fprintf(stderr, "length_bench: unknown option %s\n", a.c_str());
      return 2;
    }
  }
  try {
    auto ops = make_cpu_ops();
    double first_time = 0, first_flops = 0, first_flops_two = 0;
    std::printf(
        "# length_bench: d_model %lld, n_head %lld, n_layer %lld, d_inner %lld, window %lld, "
        "chunk %lld, rank 1, M = T, B = 1, float32%s\n",
        static_cast<long long>(cfg.d_model), static_cast<long long>(cfg.n_head),
        static_cast<long long>(cfg.n_layer), static_cast<long long>(cfg.d_inner),
        static_cast<long long>(cfg.window_len), static_cast<long long>(cfg.chunk_size),
        checkpointing ? ", activation checkpointing" : "");
    std::printf("# model FLOPs: %s\n", bench::flops_formula());
    std::printf("# %s\n", tls::cpu::blas_core_description().c_str());
    std::printf(
        "| T | step (s) | us/token | time/token ratio | model MFLOP/token | FLOPs/token ratio "
        "| FLOPs/token ratio, positional dot counted | peak tensors (MiB) | peak tensor "
        "KiB/token |\n");
    std::printf("|---|---|---|---|---|---|---|---|---|\n");
    for (int64_t T = from; T <= to; T *= 2) {
      cfg.tokens_per_sample = cfg.mem_len = T;
      cfg.validate();
      double per_step = 0, peak = 0;
      {
        bench::TrainingStep step(*ops, cfg, DType::f32, 1, checkpointing);
        // The peak counts what the model holds between steps (parameters, moments, caches) too.
        reset_host_tensor_peak();
        per_step = step.time(steps, nullptr, warmup);
        peak = static_cast<double>(host_tensor_memory().peak);
      }
      const double per_token = per_step / static_cast<double>(T);
      const double flops_per_token = 3 * bench::forward_flops(cfg, 1) / static_cast<double>(T);
      const double flops_two =
          3 * bench::forward_flops(cfg, 1, bench::CompressedScore::two_dot_products) /
          static_cast<double>(T);
      if (first_time == 0)
        first_time = per_token, first_flops = flops_per_token, first_flops_two = flops_two;
      std::printf("| %lld | %.3f | %.2f | %.3f | %.2f | %.3f | %.3f | %.1f | %.2f |\n",
                  static_cast<long long>(T), per_step, per_token * 1e6, per_token / first_time,
                  flops_per_token / 1e6, flops_per_token / first_flops, flops_two / first_flops_two,
                  peak / (1 << 20), peak / static_cast<double>(T) / 1024);
      std::fflush(stdout);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "length_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
