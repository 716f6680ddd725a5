// The two attention kernels of the CPU backend on their own, at one long-sequence shape: time
// per call (the fastest of --reps) of the window and compressed parts, forward and backward, and
// the GEMM-equivalent FLOP/s they execute next to OpenBLAS's sgemm rate at 2048^3 measured in the
// same process. Usage:
//   attention_bench [--tokens 32768] [--d-model 256] [--heads 4] [--window 256] [--chunk 16]
//                   [--reps 3]
// M = T (the cache is as long as the block, as in length_bench), r = 1, B = 1, float32.
//
// Executed FLOPs, per head: the window part scores w keys per query (content and positional
// dot products) and sums w values: 3 * 2 d_h w per query forward; the compressed part scores the
// visible slots (content and positional dot) and sums them: 3 * 2 d_h visible(t). Backwards
// both recompute the scores (2 units), then dP, dQ (2), dK or dV, dV or dK, dpos or drel:
// 8 units against the forward's 3. The compressed part's fused path (float32 on AVX-512 or AVX2,
// kernels/cpu/chunk_fused_kernels.h) scores q . (khat + pos) as one product per chunk, and dS^T Q
// serves both dK and dpos: 2 units forward (scores, P V), 5 backward (scores, dP, dQ, dV,
// dK + dpos). Both paths of the compressed part are timed, alternating, in the same run.
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "bench/sgemm_rate.h"
#include "bench/timing.h"
#include "kernels/cpu/blas_core.h"
#include "kernels/cpu/chunk_fused_kernels.h"
#include "kernels/ops.h"

using namespace tls;

namespace {

Tensor random_tensor(Ops& ops, std::vector<int64_t> shape, std::mt19937_64& rng) {
  Tensor t = ops.empty(shape, DType::f32);
  std::normal_distribution<double> normal(0.0, 0.5);
  std::vector<double> v(static_cast<size_t>(t.numel()));
  for (double& x : v) x = normal(rng);
  ops.from_host(t, v);
  return t;
}

}  // namespace

int main(int argc, char** argv) {
  cpu::ensure_fitting_blas_core(argv);  // may re-execute: first
  int64_t T = 32768, d = 256, H = 4, w = 256, c = 16;
  int reps = 3;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (i + 1 >= argc) {
      std::fprintf(stderr, "attention_bench: %s needs a value\n", a.c_str());
      return 2;
    }
    const int64_t v = std::atoll(argv[++i]);
    if (a == "--tokens")
      T = v;
    else if (a == "--d-model")
      d = v;
    else if (a == "--heads")
      H = v;
    else if (a == "--window")
      w = v;
    else if (a == "--chunk")
      c = v;
    else if (a == "--reps")
      reps = static_cast<int>(v);
    else {
      std::fprintf(stderr, "attention_bench: unknown option %s\n", a.c_str());
      return 2;
    }
  }
  if (T <= 0 || d <= 0 || H <= 0 || d % H != 0 || w <= 0 || c <= 0 || T % c != 0 || reps <= 0) {
    std::fprintf(stderr,
                 "attention_bench: need T, d, H, w, c, reps > 0, H dividing d and c dividing T\n");
    return 2;
  }
  try {
    auto ops = make_cpu_ops();
    AttentionShape s;
    s.batch = 1;
    s.tokens = T;
    s.n_head = H;
    s.d_head = d / H;
    s.window = w;
    s.chunk_size = c;
    s.chunk_rank = 1;
    s.first_query_chunk = T / c;  // M = T
    const int64_t n_slots = 2 * T / c, n_pos = n_slots;
    std::mt19937_64 rng(7);
    Tensor q = random_tensor(*ops, {1, T, d}, rng), dout = random_tensor(*ops, {1, T, d}, rng);
    Tensor keys = random_tensor(*ops, {1, w + T, d}, rng),
           values = random_tensor(*ops, {1, w + T, d}, rng);
    Tensor rel = random_tensor(*ops, {w, d}, rng), rw = random_tensor(*ops, {d}, rng),
           rr = random_tensor(*ops, {d}, rng);
    Tensor khat = random_tensor(*ops, {1, n_slots, d}, rng),
           vhat = random_tensor(*ops, {1, n_slots, d}, rng);
    Tensor pos = random_tensor(*ops, {n_pos, d}, rng);
    Tensor out_w = ops->empty({1, T, d}, DType::f32), lse_w = ops->empty({1, H, T}, DType::f32);
    Tensor out_c = ops->empty({1, T, d}, DType::f32), lse_c = ops->empty({1, H, T}, DType::f32);
    Tensor out = ops->empty({1, T, d}, DType::f32), lse = ops->empty({1, H, T}, DType::f32);
    Tensor delta = ops->empty({1, H, T}, DType::f32);
    auto zeros = [&](const Tensor& t) { return ops->zeros(t.shape(), DType::f32); };
    Tensor dq = zeros(q), dk = zeros(keys), dv = zeros(values), drel = zeros(rel), drw = zeros(rw),
           drr = zeros(rr), dkhat = zeros(khat), dvhat = zeros(vhat), dpos = zeros(pos);

    const double window_fwd = bench::fastest_seconds(reps, [&] {
      ops->window_attention_forward(out_w, lse_w, q, keys, values, rel, rw, rr, s);
    });
    // The compressed part on each float32 path this CPU runs, the paths alternating rep by rep
    // (a shared machine's speed drifts): the GEMM path, and the fused one on each instruction
    // set the CPU has.
    const std::vector<cpu::FusedLanes> fused_lanes = cpu::fused_lanes_available();
    std::vector<cpu::ChunkAttentionPath> paths = {cpu::ChunkAttentionPath::gemm};
    std::vector<const char*> path_names = {"GEMM"};
    for (cpu::FusedLanes l : fused_lanes) {
      const bool wide = l == cpu::FusedLanes::avx512;
      paths.push_back(wide ? cpu::ChunkAttentionPath::fused_avx512
                           : cpu::ChunkAttentionPath::fused_avx2);
      path_names.push_back(wide ? "fused, AVX-512" : "fused, AVX2");
    }
    std::vector<double> chunk_fwd(paths.size(), 1e30), chunk_bwd(paths.size(), 1e30);
    for (int r = 0; r < reps; ++r)
      for (size_t p = 0; p < paths.size(); ++p) {
        cpu::set_chunk_attention_path(paths[p]);
        chunk_fwd[p] = std::min(chunk_fwd[p], bench::fastest_seconds(1, [&] {
                                  ops->chunk_attention_forward(out_c, lse_c, q, khat, vhat, pos, s);
                                }));
      }
    ops->attention_merge(out, lse, out_w, lse_w, out_c, lse_c, s);
    ops->attention_delta(delta, dout, out, s);
    const double window_bwd = bench::fastest_seconds(reps, [&] {
      ops->window_attention_backward(dq, dk, dv, drel, drw, drr, dout, lse, delta, q, keys, values,
                                     rel, rw, rr, s);
    });
    for (int r = 0; r < reps; ++r)
      for (size_t p = 0; p < paths.size(); ++p) {
        cpu::set_chunk_attention_path(paths[p]);
        chunk_bwd[p] = std::min(chunk_bwd[p], bench::fastest_seconds(1, [&] {
                                  ops->chunk_attention_backward(dq, dkhat, dvhat, dpos, dout, lse,
                                                                delta, q, khat, vhat, pos, s);
                                }));
      }
    cpu::set_chunk_attention_path(cpu::ChunkAttentionPath::automatic);
    const double gemm = bench::sgemm_rate(2048, 3);

    // Visible slots summed over queries: query t sees (M/c + t div c) slots.
    double visible = 0;
    for (int64_t t = 0; t < T; ++t) visible += static_cast<double>(T / c + t / c);
    const double dh = static_cast<double>(d / H), heads = static_cast<double>(H);
    const double window_unit = 2 * dh * static_cast<double>(w) * static_cast<double>(T) * heads;
    const double chunk_unit = 2 * dh * visible * heads;
    std::printf(
        "# attention_bench: T = M = %lld, d_model %lld, %lld heads (d_head %lld), window %lld, "
        "chunk %lld, rank 1, B = 1, float32, %s threads\n",
        static_cast<long long>(T), static_cast<long long>(d), static_cast<long long>(H),
        static_cast<long long>(d / H), static_cast<long long>(w), static_cast<long long>(c),
        std::getenv("OMP_NUM_THREADS") ? std::getenv("OMP_NUM_THREADS") : "default");
    std::printf("# %s; sgemm 2048^3: %.1f GFLOP/s\n", cpu::blas_core_description().c_str(),
                gemm / 1e9);
    std::printf(
        "# executed FLOPs: forward 3 units, backward 8 units (the compressed part's fused path: 2 "
        "and 5, the positional term folded into the key); unit = 2 d_h x (w T | sum_t "
        "visible(t)) x heads; model FLOPs count 3 units forward, 6 backward\n");
    std::printf(
        "| part | path | pass | ms/call | executed GFLOP | GFLOP/s | of sgemm | model "
        "GFLOP/s | time vs GEMM path |\n");
    std::printf("|---|---|---|---|---|---|---|---|---|\n");
    auto row = [&](const char* part, const char* path, const char* pass, double sec, double flops,
                   double model_flops, double gemm_path_sec) {
      std::printf("| %s | %s | %s | %.1f | %.2f | %.1f | %.3f | %.1f | %.3f |\n", part, path, pass,
                  sec * 1e3, flops / 1e9, flops / sec / 1e9, flops / sec / gemm,
                  model_flops / sec / 1e9, sec / gemm_path_sec);
    };
    row("window", "GEMM", "forward", window_fwd, 3 * window_unit, 3 * window_unit, window_fwd);
    row("window", "GEMM", "backward", window_bwd, 8 * window_unit, 6 * window_unit, window_bwd);
    for (size_t p = 0; p < paths.size(); ++p) {
      const bool fused = p > 0;
      const char* name = path_names[p];
      row("compressed", name, "forward", chunk_fwd[p], (fused ? 2 : 3) * chunk_unit, 3 * chunk_unit,
          chunk_fwd[0]);
      row("compressed", name, "backward", chunk_bwd[p], (fused ? 5 : 8) * chunk_unit,
          6 * chunk_unit, chunk_bwd[0]);
    }
    if (fused_lanes.empty())
      std::printf(
          "# no fused compressed-attention path here: this CPU has neither AVX2 nor "
          "AVX-512\n");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "attention_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
