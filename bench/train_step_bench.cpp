// Times the training step (forward + backward + AdamW) of one config on the CPU backend and
// prints model FLOP/s next to the OpenBLAS sgemm rate at 2048^3 measured in the same process,
// and the peak resident memory. Usage:
//   train_step_bench [--layers L] [--d-model D] [--heads H] [--d-inner F] [--chunk C] [--rank R]
//                    [--window W] [--tokens T] [--mem M] [--batch B] [--steps N] [--fp64]
//                    [--activation-checkpointing] [--chunk-path auto|gemm|avx2|avx512]

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "bench/arguments.h"
#include "bench/model_flops.h"
#include "bench/sgemm_rate.h"
#include "bench/timing.h"
#include "bench/training_step.h"
#include "kernels/cpu/blas_core.h"

using namespace tls;

int main(int argc, char** argv) {
  tls::cpu::ensure_fitting_blas_core(argv);  // may re-execute: first
  ModelConfig cfg = bench::base_config_two_layers(256, 2048);
  int64_t batch = 1, steps = 6;
  DType dtype = DType::f32;
  bool checkpointing = false;
  bench::Arguments args("train_step_bench", argc, argv);
  for (std::string a; args.next(a);) {
    if (args.chunk_path()) continue;
    if (a == "--layers")
      cfg.n_layer = args.value();
    else if (a == "--d-model")
      cfg.d_model = args.value();
    else if (a == "--heads")
      cfg.n_head = args.value();
    else if (a == "--d-inner")
      cfg.d_inner = args.value();
    else if (a == "--chunk")
      cfg.chunk_size = args.value();
    else if (a == "--rank")
      cfg.chunk_rank = args.value();
    else if (a == "--window")
      cfg.window_len = args.value();
    else if (a == "--tokens")
      cfg.tokens_per_sample = args.value();
    else if (a == "--mem")
      cfg.mem_len = args.value();
    else if (a == "--batch")
      batch = args.value();
    else if (a == "--steps")
      steps = args.value();
    else if (a == "--fp64")
      dtype = DType::f64;
    else if (a == "--activation-checkpointing")
      checkpointing = true;
    else
      args.unknown();
  }
  if (steps < 1) {
    std::fprintf(stderr, "train_step_bench: --steps must be at least 1\n");
    return 2;
  }
  try {
    cfg.validate();
    auto ops = make_cpu_ops();
    bench::TrainingStep step(*ops, cfg, dtype, batch, checkpointing);
    // Steps and sgemm windows alternate, so both rates are taken side by side on a shared
    // machine whose speed drifts; each is the best seen. Each sgemm window lasts as long as the
    // step before it (sustained_sgemm_rate); the fastest single sgemm call is shown as well.
    double loss = 0, gemm = 0, gemm_burst = 0, fastest = 0, total = 0;
    step.run();  // warm-up
    for (int64_t s = 0; s < steps; ++s) {
      const double sec = bench::seconds_of([&] { loss = step.run(); });
      fastest = s == 0 ? sec : std::min(fastest, sec);
      total += sec;
      gemm = std::max(gemm, bench::sustained_sgemm_rate(2048, sec));
      gemm_burst = std::max(gemm_burst, bench::sgemm_rate(2048, 1));
    }
    const double step_s = fastest;
    const double flops = 3 * bench::forward_flops(cfg, batch);
    // docs/DESIGN.md writes the compressed score as two dot products, as it does the window's
    // (whose positional dot the count above includes); the ratio column folds it, the next counts
    // both.
    const double flops_two_dots =
        3 * bench::forward_flops(cfg, batch, bench::CompressedScore::two_dot_products);
    const char* threads = std::getenv("OMP_NUM_THREADS");
    std::printf("# train_step_bench: %s, %s%s\n", describe(cfg).c_str(), dtype_name(dtype),
                checkpointing ? ", activation checkpointing" : "");
    std::printf("# model FLOPs: %s\n", bench::flops_formula());
    std::printf(
        "# rates from the fastest of %lld steps and the best of the sgemm windows after each, "
        "each as long as the step before it (side by side: a shared machine's speed drifts, and "
        "other work only ever adds time); the ratios are against the sustained sgemm rate\n",
        static_cast<long long>(steps));
    std::printf("# %s; %s\n", tls::cpu::blas_core_description().c_str(),
                bench::Arguments::chunk_path_description().c_str());
    std::printf(
        "| threads | B | step (s), mean | step (s), fastest | tokens/s | model GFLOP/s | sgemm "
        "2048^3 GFLOP/s, sustained | fastest sgemm call | ratio | ratio, two dots | peak RSS (GiB) "
        "| peak tensors (GiB) | loss "
        "|\n");
    std::printf("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    std::printf(
        "| %s | %lld | %.3f | %.3f | %.0f | %.2f | %.2f | %.2f | %.3f | %.3f | %.2f | %.2f | %.4f "
        "|\n",
        threads ? threads : "default", static_cast<long long>(batch),
        total / static_cast<double>(steps), step_s,
        static_cast<double>(batch * cfg.tokens_per_sample) / step_s, flops / step_s / 1e9,
        gemm / 1e9, gemm_burst / 1e9, flops / step_s / gemm, flops_two_dots / step_s / gemm,
        bench::peak_rss_gib(), static_cast<double>(host_tensor_memory().peak) / (1 << 30), loss);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "train_step_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
