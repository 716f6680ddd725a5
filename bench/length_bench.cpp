// Cost against length (issue 7, targets 2 and 3): one process trains the same model at block
// lengths T = M from 2048 up (doubling), and prints per T the time per token, the model FLOPs per
// token (bench/model_flops.h: the compressed part grows with T/c), both as ratios to the first
// row, and the peak bytes of host tensors per token during a step (runtime/tensor.h: exact, and
// per step, unlike the resident set size). Usage:
//   length_bench [--from 2048] [--to 32768] [--d-model 256] [--heads 4] [--layers 2]
//                [--window 256] [--chunk 16] [--steps 3] [--min-seconds 5]
//                [--activation-checkpointing]
//                [--no-warmup]   (time the first step too: for single steps at very long T)
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "bench/model_flops.h"
#include "bench/training_step.h"
#include "kernels/cpu/blas_core.h"

using namespace tls;

int main(int argc, char** argv) {
  tls::cpu::ensure_fitting_blas_core(argv);  // may re-execute: first
  ModelConfig cfg = bench::long_sequence_config(2);
  int64_t from = 2048, to = 32768, steps = 3;
  double min_seconds = 5;
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
    else if (a == "--min-seconds")
      min_seconds = static_cast<double>(next());
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
    std::printf(
        "# length_bench: d_model %lld, n_head %lld, n_layer %lld, d_inner %lld, window %lld, "
        "chunk %lld, rank 1, M = T, B = 1, float32%s\n",
        static_cast<long long>(cfg.d_model), static_cast<long long>(cfg.n_head),
        static_cast<long long>(cfg.n_layer), static_cast<long long>(cfg.d_inner),
        static_cast<long long>(cfg.window_len), static_cast<long long>(cfg.chunk_size),
        checkpointing ? ", activation checkpointing" : "");
    std::printf("# model FLOPs: %s\n", bench::flops_formula());
    std::printf(
        "# time per token from the fastest of at least %lld steps and %.0f s per T (a shared "
        "machine only ever adds time); the first T is measured again after the last\n",
        static_cast<long long>(steps), min_seconds);
    std::printf("# %s\n", tls::cpu::blas_core_description().c_str());
    struct Row {
      int64_t T;
      bench::TrainingStep::Times times;
      double peak;
    };
    auto measure = [&](int64_t T) {
      cfg.tokens_per_sample = cfg.mem_len = T;
      cfg.validate();
      bench::TrainingStep step(*ops, cfg, DType::f32, 1, checkpointing);
      // The peak counts what the model holds between steps (parameters, moments, caches) too.
      reset_host_tensor_peak();
      Row row{T, step.time(steps, nullptr, warmup, min_seconds), 0};
      row.peak = static_cast<double>(host_tensor_memory().peak);
      std::fprintf(stderr, "length_bench: T=%lld: %lld steps, fastest %.3f s\n",
                   static_cast<long long>(T), static_cast<long long>(row.times.steps),
                   row.times.fastest);
      return row;
    };
    std::vector<Row> rows;
    for (int64_t T = from; T <= to; T *= 2) rows.push_back(measure(T));
    if (rows.size() > 1) {
      // The first T again, after the longest: every ratio is against it, so a slow spell of the
      // machine while it first ran must not flatter the others.
      const Row again = measure(from);
      if (again.times.fastest < rows[0].times.fastest) rows[0].times = again.times;
    }
    std::printf(
        "| T | steps | step (s), mean | step (s), fastest | us/token | time/token ratio | model "
        "MFLOP/token | FLOPs/token ratio | FLOPs/token ratio, positional dot counted | peak "
        "tensors (MiB) | peak tensor KiB/token |\n");
    std::printf("|---|---|---|---|---|---|---|---|---|---|---|\n");
    double first_time = 0, first_flops = 0, first_flops_two = 0;
    for (const Row& row : rows) {
      const double T = static_cast<double>(row.T);
      cfg.tokens_per_sample = cfg.mem_len = row.T;
      const double per_token = row.times.fastest / T;
      const double flops_per_token = 3 * bench::forward_flops(cfg, 1) / T;
      const double flops_two =
          3 * bench::forward_flops(cfg, 1, bench::CompressedScore::two_dot_products) / T;
      if (first_time == 0)
        first_time = per_token, first_flops = flops_per_token, first_flops_two = flops_two;
      std::printf(
          "| %lld | %lld | %.3f | %.3f | %.2f | %.3f | %.2f | %.3f | %.3f | %.1f | %.2f |\n",
          static_cast<long long>(row.T), static_cast<long long>(row.times.steps), row.times.mean,
          row.times.fastest, per_token * 1e6, per_token / first_time, flops_per_token / 1e6,
          flops_per_token / first_flops, flops_two / first_flops_two, row.peak / (1 << 20),
          row.peak / T / 1024);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "length_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
