// Cost against length: one process trains the same model at block
// lengths T = M from 2048 up (doubling), and prints per T the time per token, the model FLOPs per
// token (bench/model_flops.h: the compressed part grows with T/c), both as ratios to the first
// row, and the peak bytes of host tensors per token during a step (kernels/tensor.h: exact, and
// per step, unlike the resident set size). By default every T's model is built at once and
// `--rounds` rounds step each in turn (ratios measured side by side on a shared machine);
// --sequential measures one T after another (for T too long to hold several models). Usage:
//   length_bench [--from 2048] [--to 32768] [--d-model 256] [--heads 4] [--layers 2]
//                [--window 256] [--chunk 16] [--rounds 3] [--activation-checkpointing]
//                [--chunk-path auto|gemm|avx2|avx512]
//                [--sequential [--steps 3] [--min-seconds 5]]
//                [--no-warmup]   (sequential, and time the first step too: for single steps at
//                                 very long T)
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
constexpr double kRoundSeconds = 1.5;  // per T and round, when interleaved
}  // namespace

int main(int argc, char** argv) {
  tls::cpu::ensure_fitting_blas_core(argv);  // may re-execute: first
  ModelConfig cfg = bench::long_sequence_config(2);
  int64_t from = 2048, to = 32768, steps = 3;
  double min_seconds = 5;
  int64_t rounds = 3;
  bool sequential = false;
  bool checkpointing = false, warmup = true;
  bench::Arguments args("length_bench", argc, argv);
  for (std::string a; args.next(a);) {
    if (args.model_shape(cfg) || args.chunk_path()) continue;
    if (a == "--from")
      from = args.value();
    else if (a == "--to")
      to = args.value();
    else if (a == "--steps")
      steps = args.value();
    else if (a == "--rounds")
      rounds = args.value();
    else if (a == "--sequential")
      sequential = true;
    else if (a == "--min-seconds")
      min_seconds = static_cast<double>(args.value());
    else if (a == "--activation-checkpointing")
      checkpointing = true;
    else if (a == "--no-warmup")
      warmup = false, sequential = true;
    else
      args.unknown();
  }
  if (steps < 1 || rounds < 1) {
    std::fprintf(stderr, "length_bench: --steps and --rounds must be at least 1\n");
    return 2;
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
    std::printf("# %s; %s\n", tls::cpu::blas_core_description().c_str(),
                bench::Arguments::chunk_path_description().c_str());
    struct Row {
      int64_t T;
      bench::TrainingStep::Times times;
      double peak;
    };
    std::vector<Row> rows;
    auto config_for = [&](int64_t T) {
      cfg.tokens_per_sample = cfg.mem_len = T;
      cfg.validate();
      return cfg;
    };
    if (sequential) {
      std::printf(
          "# each T in turn: time per token from the fastest of at least %lld steps and %.0f s; "
          "the first T is measured again after the last\n",
          static_cast<long long>(steps), min_seconds);
      auto measure = [&](int64_t T) {
        bench::TrainingStep step(*ops, config_for(T), DType::f32, 1, checkpointing);
        // The peak counts what the model holds between steps (parameters, moments, caches).
        reset_host_tensor_peak();
        Row row{T, step.time(steps, nullptr, warmup, min_seconds), 0};
        row.peak = static_cast<double>(host_tensor_memory().peak);
        return row;
      };
      for (int64_t T = from; T <= to; T *= 2) rows.push_back(measure(T));
      if (rows.size() > 1) {
        // Every ratio is against the first T: a slow spell of the machine while it first ran
        // must not flatter the others.
        const Row again = measure(from);
        if (again.times.fastest < rows[0].times.fastest) rows[0].times = again.times;
      }
    } else {
      // Every T's model lives at once and the rounds visit them in turn, so a slow spell of a
      // shared machine falls on all of them alike; each T's time is its fastest step.
      std::printf(
          "# all T interleaved: %lld rounds, each running every T for at least one step and "
          "%.1f s; time per token from each T's fastest step\n",
          static_cast<long long>(rounds), kRoundSeconds);
      std::vector<std::unique_ptr<bench::TrainingStep>> models;
      for (int64_t T = from; T <= to; T *= 2) {
        const int64_t held_before = host_tensor_memory().live;
        models.push_back(std::make_unique<bench::TrainingStep>(*ops, config_for(T), DType::f32, 1,
                                                               checkpointing));
        // The step's peak above what the other models hold, the model's own state included.
        reset_host_tensor_peak();
        models.back()->run();
        rows.push_back(Row{T, {}, static_cast<double>(host_tensor_memory().peak - held_before)});
      }
      std::vector<double> total(rows.size(), 0.0);
      for (int64_t r = 0; r < rounds; ++r)
        for (size_t i = 0; i < rows.size(); ++i) {
          const bench::TrainingStep::Times t = models[i]->time(1, nullptr, false, kRoundSeconds);
          Row& row = rows[i];
          row.times.fastest =
              row.times.steps == 0 ? t.fastest : std::min(row.times.fastest, t.fastest);
          row.times.steps += t.steps;
          total[i] += t.mean * static_cast<double>(t.steps);
        }
      for (size_t i = 0; i < rows.size(); ++i)
        rows[i].times.mean = total[i] / static_cast<double>(rows[i].times.steps);
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
