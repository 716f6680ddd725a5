// The GPU benchmark of bench/gpu_check.sh, on device 0:
//  1. cuBLAS GEMM rates at 4096^3 measured in this run: sgemm (FP32), sgemm with TF32, dgemm,
//     and bf16 inputs with float32 accumulation (cublasGemmEx) - the reference rates.
//  2. The fused attention kernels (CudaOps window / chunk attention, forward and backward) for
//     T = 8192, 32768, 131072 with d = 512, 8 heads, window 512, chunk 16, rank 1, mem_len = T,
//     the float32 kernels beside the tensor-core ones (--precision bf16): time, achieved
//     FLOP/s and its fraction of the bf16 GEMM rate, counting per visible (query, key) pair and
//     head dimension window 6 (fwd) / 16 (bwd) and compressed 4 (fwd) / 14 (bwd) FLOPs.
//  3. The training step (forward + backward + AdamW, float32 weights) of a 2-layer model of the
//     same shape on CudaOps, with exact float32 GEMMs and with bf16 GEMM operands
//     (--precision bf16, which also stores the backward's activations in bfloat16): tokens/s,
//     model FLOP/s (bench/model_flops.h) as a fraction of the bf16 GEMM rate, peak device memory
//     per token and, per T, the bf16 run's peak against the float32 run's.
// Peak device memory: the high-water mark of the stream-ordered allocator's pool (every
// CudaOps tensor comes from it), reset before each measurement. Prints markdown tables.
// Without a GPU it prints the reason and exits 0. --smoke runs every part at toy sizes (GEMMs
// 128^3, T = 256, a d = 64 model); --emulated at tinier ones (T = 64, attention 2 heads and window
// 32, a d = 128 model), for the CUDA emulator in CI (gpu_check.sh --emulated): a mistake in the
// benchmark shows, and its tables print, before it runs on a GPU.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/device.h"

#ifdef TLS_HAVE_CUDA
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "bench/model_flops.h"
#include "kernels/cuda/common.h"
#include "kernels/cuda/cuda_ops.h"
#include "layers/init.h"
#include "layers/model.h"
#include "training/optimizer.h"

using namespace tls;

namespace {

// What one run measures: the paper-scale sizes, or toy ones (--smoke).
struct Sizes {
  int gemm_n = 4096;
  std::vector<int64_t> tokens{8192, 32768, 131072};
  int64_t train_d = 512, train_inner = 2048;
  int64_t attn_heads = 8, attn_window = 512;
};
Sizes g_sizes;

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Times `reps` calls of f after one warm-up call, synchronising the device around them.
template <class F>
double time_it(int reps, F&& f) {
  f();
  TLS_CUDA_CHECK(cudaDeviceSynchronize());
  const auto t0 = Clock::now();
  for (int i = 0; i < reps; ++i) f();
  TLS_CUDA_CHECK(cudaDeviceSynchronize());
  return seconds_since(t0) / reps;
}

cudaMemPool_t pool() {
  cudaMemPool_t p;
  TLS_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&p, 0));
  return p;
}

void reset_peak() {
  uint64_t zero = 0;
  TLS_CUDA_CHECK(cudaMemPoolSetAttribute(pool(), cudaMemPoolAttrUsedMemHigh, &zero));
}

double peak_gib() {
  uint64_t high = 0;
  TLS_CUDA_CHECK(cudaMemPoolGetAttribute(pool(), cudaMemPoolAttrUsedMemHigh, &high));
  return static_cast<double>(high) / (1024.0 * 1024.0 * 1024.0);
}

struct GemmRates {
  double f32 = 0, tf32 = 0, f64 = 0, bf16 = 0;
};

// C = A B for n x n matrices through cublasGemmEx with the given types.
double gemm_rate(cublasHandle_t h, int n, cudaDataType_t type, cublasComputeType_t compute) {
  const size_t esize = type == CUDA_R_64F ? 8 : type == CUDA_R_32F ? 4 : 2;
  void *a, *b, *c;
  const size_t bytes = static_cast<size_t>(n) * n * esize;
  TLS_CUDA_CHECK(cudaMalloc(&a, bytes));
  TLS_CUDA_CHECK(cudaMalloc(&b, bytes));
  TLS_CUDA_CHECK(cudaMalloc(&c, static_cast<size_t>(n) * n * (type == CUDA_R_16BF ? 4 : esize)));
  TLS_CUDA_CHECK(cudaMemset(a, 0, bytes));  // bit pattern 0 is 0.0 in every type
  TLS_CUDA_CHECK(cudaMemset(b, 0, bytes));
  const double one = 1.0, zero = 0.0;
  const float onef = 1.0f, zerof = 0.0f;
  const bool dbl = compute == CUBLAS_COMPUTE_64F;
  const cudaDataType_t ctype = type == CUDA_R_16BF ? CUDA_R_32F : type;
  const double s = time_it(5, [&] {
    TLS_CUBLAS_CHECK(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n,
                                  dbl ? static_cast<const void*>(&one) : &onef, a, type, n, b, type,
                                  n, dbl ? static_cast<const void*>(&zero) : &zerof, c, ctype, n,
                                  compute, CUBLAS_GEMM_DEFAULT));
  });
  TLS_CUDA_CHECK(cudaFree(a));
  TLS_CUDA_CHECK(cudaFree(b));
  TLS_CUDA_CHECK(cudaFree(c));
  return 2.0 * n * static_cast<double>(n) * n / s;
}

GemmRates measure_gemms() {
  cublasHandle_t h;
  TLS_CUBLAS_CHECK(cublasCreate(&h));
  GemmRates r;
  const int n = g_sizes.gemm_n;
  r.f32 = gemm_rate(h, n, CUDA_R_32F, CUBLAS_COMPUTE_32F_PEDANTIC);
  r.tf32 = gemm_rate(h, n, CUDA_R_32F, CUBLAS_COMPUTE_32F_FAST_TF32);
  r.f64 = gemm_rate(h, n, CUDA_R_64F, CUBLAS_COMPUTE_64F);
  r.bf16 = gemm_rate(h, n, CUDA_R_16BF, CUBLAS_COMPUTE_32F);
  TLS_CUBLAS_CHECK(cublasDestroy(h));
  return r;
}

Tensor random_tensor(Ops& ops, std::vector<int64_t> shape, uint64_t seed) {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  std::vector<double> v(static_cast<size_t>(n));
  uint64_t x = seed * 0x9e3779b97f4a7c15ULL + 1;
  for (auto& e : v) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    e = (static_cast<double>(x % 2000) / 1000.0 - 1.0) * 0.5;
  }
  Tensor t = ops.empty(shape, DType::f32);
  ops.from_host(t, v);
  return t;
}

// One part's kernels at one size: forward and backward seconds and peak GiB.
struct AttnTiming {
  double wf = 0, wb = 0, cf = 0, cb = 0, peak = 0;
};

AttnTiming time_attention(CudaOps& ops, const AttentionShape& s) {
  const int64_t T = s.tokens, H = s.n_head, dl = H * s.d_head, w = s.window;
  const int64_t slots = 2 * T / s.chunk_size * s.chunk_rank;
  reset_peak();
  Tensor q = random_tensor(ops, {1, T, dl}, 1), keys = random_tensor(ops, {1, w + T, dl}, 2);
  Tensor values = random_tensor(ops, {1, w + T, dl}, 3), rel = random_tensor(ops, {w, dl}, 4);
  Tensor rw = random_tensor(ops, {dl}, 5), rr = random_tensor(ops, {dl}, 6);
  Tensor khat = random_tensor(ops, {1, slots, dl}, 7), vhat = random_tensor(ops, {1, slots, dl}, 8);
  Tensor pos = random_tensor(ops, {slots, dl}, 9), dout = random_tensor(ops, {1, T, dl}, 10);
  Tensor ow = ops.empty({1, T, dl}, DType::f32), oc = ops.empty({1, T, dl}, DType::f32);
  Tensor out = ops.empty({1, T, dl}, DType::f32);
  Tensor lw = ops.empty({1, H, T}, DType::f32), lc = ops.empty({1, H, T}, DType::f32);
  Tensor lse = ops.empty({1, H, T}, DType::f32), delta = ops.empty({1, H, T}, DType::f32);
  Tensor dq = ops.zeros({1, T, dl}, DType::f32), dk = ops.zeros({1, w + T, dl}, DType::f32);
  Tensor dv = ops.zeros({1, w + T, dl}, DType::f32), drel = ops.zeros({w, dl}, DType::f32);
  Tensor drw = ops.zeros({dl}, DType::f32), drr = ops.zeros({dl}, DType::f32);
  Tensor dkh = ops.zeros({1, slots, dl}, DType::f32), dvh = ops.zeros({1, slots, dl}, DType::f32);
  Tensor dpos = ops.zeros({slots, dl}, DType::f32);
  const int reps = T >= 131072 ? 1 : 3;
  AttnTiming r;
  r.wf =
      time_it(reps, [&] { ops.window_attention_forward(ow, lw, q, keys, values, rel, rw, rr, s); });
  r.cf = time_it(reps, [&] { ops.chunk_attention_forward(oc, lc, q, khat, vhat, pos, s); });
  ops.attention_merge(out, lse, ow, lw, oc, lc, s);
  ops.attention_delta(delta, dout, out, s);
  r.wb = time_it(reps, [&] {
    ops.window_attention_backward(dq, dk, dv, drel, drw, drr, dout, lse, delta, q, keys, values,
                                  rel, rw, rr, s);
  });
  r.cb = time_it(reps, [&] {
    ops.chunk_attention_backward(dq, dkh, dvh, dpos, dout, lse, delta, q, khat, vhat, pos, s);
  });
  r.peak = peak_gib();
  return r;
}

// The float32 kernels (CUDA cores) beside the tensor-core ones (bf16 operands, --precision
// bf16), each as TFLOP/s and as a fraction of the bf16 GEMM rate measured in this run.
void attention_table(CudaOps& ops, const GemmRates& g) {
  const int64_t H = g_sizes.attn_heads, dh = 64, w = g_sizes.attn_window;
  std::printf(
      "\n### Fused attention kernels (B 1, d %lld, %lld heads, w %lld, c 16, r 1, mem_len = T)\n\n"
      "Targets on an H100 / H200 for the tensor-core kernels: forward >= 50%%, backward >= 35%% "
      "of the bf16 GEMM rate (targets until measured on a GPU).\n\n",
      static_cast<long long>(H * dh), static_cast<long long>(H), static_cast<long long>(w));
  std::printf(
      "| T | part | kernels | fwd ms | fwd TFLOP/s | fwd / bf16 GEMM | bwd ms | bwd TFLOP/s | "
      "bwd / bf16 GEMM | peak GiB |\n|---|---|---|---|---|---|---|---|---|---|\n");
  for (int64_t T : g_sizes.tokens) {
    AttentionShape s;
    s.batch = 1;
    s.tokens = T;
    s.n_head = H;
    s.d_head = dh;
    s.window = w;
    s.chunk_size = 16;
    s.chunk_rank = 1;
    s.first_query_chunk = T / 16;  // mem_len = T
    const double win_pairs = static_cast<double>(H) * T * w;
    double chunk_pairs = 0;
    for (int64_t t = 0; t < T; ++t) chunk_pairs += static_cast<double>(T / 16 + t / 16);
    chunk_pairs *= H;
    for (GemmInputs mode : {GemmInputs::exact, GemmInputs::bf16}) {
      ops.set_gemm_inputs(mode);
      const char* kind = mode == GemmInputs::bf16 ? "bf16 tensor cores" : "float32";
      try {
        const AttnTiming r = time_attention(ops, s);
        auto row = [&](const char* part, double fwd_flops, double f, double bwd_flops, double b) {
          std::printf("| %lld | %s | %s | %.2f | %.2f | %.3f | %.2f | %.2f | %.3f | %.2f |\n",
                      static_cast<long long>(T), part, kind, f * 1e3, fwd_flops / f / 1e12,
                      fwd_flops / f / g.bf16, b * 1e3, bwd_flops / b / 1e12, bwd_flops / b / g.bf16,
                      r.peak);
        };
        row("window", 6 * dh * win_pairs, r.wf, 16 * dh * win_pairs, r.wb);
        row("compressed", 4 * dh * chunk_pairs, r.cf, 14 * dh * chunk_pairs, r.cb);
      } catch (const std::exception& e) {
        std::printf("| %lld | both | %s | failed: %s | | | | | | |\n", static_cast<long long>(T),
                    kind, e.what());
      }
      std::fflush(stdout);
    }
  }
  ops.set_gemm_inputs(GemmInputs::exact);
}

double training_row(CudaOps& ops, const GemmRates& g, int64_t T, GemmInputs mode);

void training_table(CudaOps& ops, const GemmRates& g) {
  std::printf(
      "\n### Training step (float32 weights, 2 layers, d %lld, 8 heads, d_inner %lld, w 512 (or "
      "T), c 16, "
      "r 1, mem_len = T, B 1)\n\n",
      static_cast<long long>(g_sizes.train_d), static_cast<long long>(g_sizes.train_inner));
  std::printf(
      "Target on an H100 / H200: model FLOP/s >= 40%% of the bf16 GEMM rate at T = 32768 "
      "with bf16 operands (a target until measured on a GPU).\n\n");
  std::printf(
      "| T | GEMM operands | saved activations | step ms | tokens/s | model TFLOP/s | / bf16 GEMM "
      "| / fp32 GEMM | peak GiB | peak KiB / token | loss |\n"
      "|---|---|---|---|---|---|---|---|---|---|---|\n");
  std::vector<std::string> ratios;
  for (int64_t T : g_sizes.tokens) {
    double peak[2] = {0, 0};
    for (GemmInputs mode : {GemmInputs::exact, GemmInputs::bf16}) {
      ops.set_gemm_inputs(mode);
      peak[mode == GemmInputs::bf16] = training_row(ops, g, T, mode);
    }
    if (peak[0] > 0 && peak[1] > 0)
      ratios.push_back("T = " + std::to_string(T) + ": " + std::to_string(peak[1] / peak[0]));
  }
  ops.set_gemm_inputs(GemmInputs::exact);
  std::printf(
      "\nPeak device memory, bf16 activations / float32 (2 layers, so the parameters, "
      "optimizer state and logits weigh in):");
  for (const std::string& r : ratios) std::printf(" %s;", r.c_str());
  std::printf("\n");
}

double training_row(CudaOps& ops, const GemmRates& g, int64_t T, GemmInputs mode) {
  ModelConfig cfg = bench::base_config_two_layers(std::min<int64_t>(512, T), T);
  cfg.d_model = g_sizes.train_d;
  cfg.d_inner = g_sizes.train_inner;
  try {
    cfg.validate();
    reset_peak();
    TransformerLSModel model(ops, cfg, DType::f32);
    initialize_parameters(ops, model, 1);
    OptimizerSettings opt;
    AdamW adam(ops, model.parameters(), opt);
    ModelState state = model.initial_state(1);
    std::vector<double> tok(static_cast<size_t>(T));
    for (size_t i = 0; i < tok.size(); ++i) tok[i] = static_cast<double>((i * 131 + 7) % 256);
    Tensor tokens = ops.empty({1, T}, DType::i32);
    ops.from_host(tokens, tok);
    PassContext ctx;
    ctx.training = true;
    int64_t u = 0;
    double loss = 0;
    const double step = time_it(T >= 131072 ? 1 : 2, [&] {
      model.zero_grad();
      ModelSaved saved;
      loss = model.forward(tokens, tokens, state, saved, ctx) / static_cast<double>(T);
      model.backward(saved, 1.0 / static_cast<double>(saved.n_targets), ctx);
      saved = ModelSaved();
      adam.step(++u);
    });
    const double flops = 3 * bench::forward_flops(cfg, 1) / step;
    const double peak = peak_gib();
    std::printf("| %lld | %s | %s | %.1f | %.0f | %.2f | %.3f | %.3f | %.2f | %.2f | %.4f |\n",
                static_cast<long long>(T), to_string(mode), dtype_name(model.activation_storage()),
                step * 1e3, static_cast<double>(T) / step, flops / 1e12, flops / g.bf16,
                flops / g.f32, peak, peak * 1024 * 1024 / static_cast<double>(T), loss);
    std::fflush(stdout);
    return peak;
  } catch (const std::exception& e) {
    std::printf("| %lld | %s | | failed: %s | | | | | | | |\n", static_cast<long long>(T),
                to_string(mode), e.what());
  }
  std::fflush(stdout);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  bool emulated = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--smoke") == 0) {
      g_sizes = Sizes{128, {256}, 64, 256, 8, 512};
    } else if (std::strcmp(argv[i], "--emulated") == 0) {
      // Tiny shapes for the CUDA emulator: every table, with host timings (meaningless).
      g_sizes = Sizes{64, {64}, 128, 256, 2, 32};  // a d_head 16 model: tensor cores under bf16
      emulated = true;
    } else {
      std::fprintf(stderr, "gpu_bench: unknown option %s (the options are --smoke, --emulated)\n",
                   argv[i]);
      return 2;
    }
  }
  if (cuda_device_count() == 0) {
    std::printf("gpu_bench: no GPU: %s\n", cuda_unavailable_reason().c_str());
    return 0;
  }
  try {
    cudaDeviceProp prop{};
    TLS_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    std::printf("## gpu_bench on %s (sm_%d%d, %.0f GiB)\n\n", prop.name, prop.major, prop.minor,
                static_cast<double>(prop.totalGlobalMem) / (1 << 30));
    if (emulated)
      std::printf(
          "(--emulated: tiny shapes; times are the emulator's on the host, not a GPU's)\n\n");
    const GemmRates g = measure_gemms();
    std::printf(
        "| cuBLAS %d^3 | FP32 | TF32 | FP64 | BF16 (FP32 accumulate) |\n|---|---|---|---|---|\n",
        g_sizes.gemm_n);
    std::printf("| TFLOP/s | %.1f | %.1f | %.1f | %.1f |\n", g.f32 / 1e12, g.tf32 / 1e12,
                g.f64 / 1e12, g.bf16 / 1e12);
    std::fflush(stdout);
    CudaOps ops(0);
    attention_table(ops, g);
    training_table(ops, g);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gpu_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}

#else  // no CUDA backend compiled in

int main() {
  std::printf("gpu_bench: no GPU: %s\n", tls::cuda_unavailable_reason().c_str());
  return 0;
}

#endif
