// The tensor-core attention (kernels/cuda/attention_wmma.cuh, used under --precision bf16) and
// the deterministic attention backward of every precision, on the GPU (or the CUDA emulator):
// - bf16 forward and backward of both parts against the float64 CPU reference on the same
//   inputs, for shapes with partial query, key and positional tiles, several key tiles per
//   query tile, clamped positional ids, queries that see no compressed slot and a slot group
//   that ends before the slots its queries may see;
// - head sizes that are not a multiple of 16 keep the float32 kernels (bit for bit);
// - two runs of the same backward, and two runs of a short training job, agree bit for bit;
// - tls_dist --device cuda --precision bf16 resumed from a checkpoint ends with the same
//   parameters and optimizer state, bit for bit, as the same job run without a break.
//
// Tolerance of the bf16 path. Its products take operands rounded to bf16 (8 significant bits:
// unit roundoff u = 2^-8) and accumulate in float32 (whose error is negligible beside u). A dot
// product of L terms with both operands rounded is off by at most 2u sum |a_i b_i|; for terms of
// random sign that is about 2u sqrt(L) rms(a_i b_i), while the result itself is about
// sqrt(L) rms(a_i b_i): the sqrt(L) of the error cancels against the growth of the result, and
// the error relative to the tensor's scale stays a few u whatever the reduction length. The
// backward chains three such stages (scores, dS, the gradient products), each rounding its
// operands anew. So every tensor must agree within kFactor u = 4u (1.6%) of its largest
// reference element; the observed errors (printed) are 1-2u. A wrong term fails it: one key,
// slot or positional row missing or misplaced changes an element by about one term, 1/sqrt(L)
// of the scale, i.e. 10% or more for the reductions here (L <= 88).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "checkpoint/hdf5_reader.h"
#include "kernels/device.h"
#include "kernels/ops.h"
#include "layers/init.h"
#include "layers/model.h"
#include "support/process.h"
#include "support/require_cuda.h"
#include "support/tiny_model.h"
#include "training/optimizer.h"

namespace tls::test {
namespace {

constexpr double kUnitRoundoff = 1.0 / 256;  // bf16: 2^-8
constexpr double kFactor = 4;

std::vector<double> uniform(int64_t n, uint32_t seed, double scale) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<double> u(-1.0, 1.0);
  std::vector<double> v(static_cast<size_t>(n));
  for (auto& x : v) x = static_cast<float>(u(gen) * scale);  // representable in float32
  return v;
}

struct Case {
  const char* name;
  AttentionShape s;
  int64_t n_slots, n_pos;
};

std::vector<Case> cases() {
  std::vector<Case> out;
  AttentionShape a;  // partial query tile (T 40), w 24, c 4, r 2, clamped ids, cache of 2 chunks
  a.batch = 2;
  a.tokens = 40;
  a.n_head = 2;
  a.d_head = 32;
  a.window = 24;
  a.chunk_size = 4;
  a.chunk_rank = 2;
  a.first_query_chunk = 2;
  out.push_back({"B2_T40_dh32_w24_c4_r2", a, (2 + 10) * 2, 7});
  AttentionShape b;  // w 40 > a key tile, dh 16, no cache: the first chunk sees no slot
  b.batch = 1;
  b.tokens = 48;
  b.n_head = 3;
  b.d_head = 16;
  b.window = 40;
  b.chunk_size = 16;
  b.chunk_rank = 1;
  b.first_query_chunk = 0;
  out.push_back({"B1_T48_dh16_w40_c16_r1", b, 3, 3});
  // One sequence-parallel rank's slot group: khat ends before the slots the queries may see
  // (first chunk shifted past it), every slot visible to every query, most ids clamped.
  AttentionShape g = a;
  g.first_query_chunk = 9;
  out.push_back({"slot_group_B2_T40_c4_r2", g, 6, 5});
  // Slot groups with no id clamped (two positional tiles, the first rows unused) and with the
  // first chunks seeing only part of the group.
  out.push_back({"slot_group_no_id_clamped", g, 6, 40});
  AttentionShape h = a;
  h.first_query_chunk = 3;
  out.push_back({"slot_group_partly_visible", h, 10, 9});
  return out;
}

// Every input and output of one part's forward + backward, on the host.
struct Result {
  std::vector<std::vector<double>> tensors;
};

// A tensor of `shape` with values uniform in [-scale, scale) from `seed`.
Tensor random_tensor(Ops& ops, DType dt, std::vector<int64_t> shape, uint32_t seed, double scale) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  Tensor t = ops.empty(shape, dt);
  ops.from_host(t, uniform(n, seed, scale));
  return t;
}

// The window part: forward, delta from a random dout, backward (gradients start at zero).
Result run_window(Ops& ops, DType dt, const AttentionShape& s) {
  const int64_t B = s.batch, T = s.tokens, H = s.n_head, dl = H * s.d_head, w = s.window;
  auto make = [&](std::vector<int64_t> shape, uint32_t seed, double scale) {
    return random_tensor(ops, dt, std::move(shape), seed, scale);
  };
  const double qscale = 1.0 / std::sqrt(static_cast<double>(s.d_head));  // as the layer scales q
  Tensor q = make({B, T, dl}, 1, qscale), keys = make({B, w + T, dl}, 2, 1),
         values = make({B, w + T, dl}, 3, 1), rel = make({w, dl}, 4, 1), rw = make({dl}, 5, 0.5),
         rr = make({dl}, 6, 0.5), dout = make({B, T, dl}, 7, 1);
  Tensor out = ops.empty({B, T, dl}, dt), lse = ops.empty({B, H, T}, dt),
         delta = ops.empty({B, H, T}, dt);
  Tensor dq = ops.zeros({B, T, dl}, dt), dk = ops.zeros({B, w + T, dl}, dt),
         dv = ops.zeros({B, w + T, dl}, dt), drel = ops.zeros({w, dl}, dt),
         drw = ops.zeros({dl}, dt), drr = ops.zeros({dl}, dt);
  ops.window_attention_forward(out, lse, q, keys, values, rel, rw, rr, s);
  ops.attention_delta(delta, dout, out, s);
  ops.window_attention_backward(dq, dk, dv, drel, drw, drr, dout, lse, delta, q, keys, values, rel,
                                rw, rr, s);
  Result r;
  for (const Tensor* t : {&out, &lse, &dq, &dk, &dv, &drel, &drw, &drr})
    r.tensors.push_back(ops.to_host(*t));
  return r;
}
const char* const kWindowNames[] = {"out", "lse", "dq", "dkeys", "dvalues", "drel", "dr_w", "dr_r"};

Result run_chunk(Ops& ops, DType dt, const Case& c) {
  const AttentionShape& s = c.s;
  const int64_t B = s.batch, T = s.tokens, H = s.n_head, dl = H * s.d_head;
  auto make = [&](std::vector<int64_t> shape, uint32_t seed, double scale) {
    return random_tensor(ops, dt, std::move(shape), seed, scale);
  };
  const double qscale = 1.0 / std::sqrt(static_cast<double>(s.d_head));
  Tensor q = make({B, T, dl}, 11, qscale), khat = make({B, c.n_slots, dl}, 12, 1),
         vhat = make({B, c.n_slots, dl}, 13, 1), pos = make({c.n_pos, dl}, 14, 1),
         dout = make({B, T, dl}, 15, 1), out_w = make({B, T, dl}, 16, 1),
         lse_w = make({B, H, T}, 17, 1);
  Tensor out = ops.empty({B, T, dl}, dt), lse = ops.empty({B, H, T}, dt),
         out_m = ops.empty({B, T, dl}, dt), lse_m = ops.empty({B, H, T}, dt),
         delta = ops.empty({B, H, T}, dt);
  Tensor dq = ops.zeros({B, T, dl}, dt), dkh = ops.zeros({B, c.n_slots, dl}, dt),
         dvh = ops.zeros({B, c.n_slots, dl}, dt), dpos = ops.zeros({c.n_pos, dl}, dt);
  ops.chunk_attention_forward(out, lse, q, khat, vhat, pos, s);
  // The backward takes lse and delta merged with a (random) window part, as in the layer: with
  // this part's own, every query's dS sums to zero, and a positional row that all of a query's
  // slots share (every id clamped) would get a zero gradient, testing nothing.
  ops.attention_merge(out_m, lse_m, out, lse, out_w, lse_w, s);
  ops.attention_delta(delta, dout, out_m, s);
  ops.chunk_attention_backward(dq, dkh, dvh, dpos, dout, lse_m, delta, q, khat, vhat, pos, s);
  Result r;
  for (const Tensor* t : {&out, &lse, &dq, &dkh, &dvh, &dpos}) r.tensors.push_back(ops.to_host(*t));
  return r;
}
const char* const kChunkNames[] = {"out", "lse", "dq", "dkhat", "dvhat", "dpos"};

// max |got - want| / max |want| (finite elements; -inf lse must match exactly).
double scaled_error(const std::vector<double>& got, const std::vector<double>& want) {
  double diff = 0, scale = 0;
  for (size_t k = 0; k < want.size(); ++k) {
    if (!std::isfinite(want[k])) {
      if (got[k] != want[k]) return INFINITY;
      continue;
    }
    diff = std::max(diff, std::abs(got[k] - want[k]));
    scale = std::max(scale, std::abs(want[k]));
  }
  return scale > 0 ? diff / scale : diff;
}

void expect_close(const Result& got, const Result& want, const char* const* names,
                  const std::string& what) {
  const double tol = kFactor * kUnitRoundoff;
  ASSERT_EQ(got.tensors.size(), want.tensors.size());
  for (size_t i = 0; i < want.tensors.size(); ++i) {
    const double e = scaled_error(got.tensors[i], want.tensors[i]);
    std::printf("  %s %-8s scaled error %.2e (tolerance %.2e)\n", what.c_str(), names[i], e, tol);
    EXPECT_LE(e, tol) << what << " " << names[i];
  }
}

std::unique_ptr<Ops> bf16_gpu() {
  auto ops = make_ops(Device::cuda, 0);
  ops->set_gemm_inputs(GemmInputs::bf16);
  return ops;
}

TEST(CudaTensorCoreAttention, WindowMatchesFloat64Reference) {
  TLS_REQUIRE_CUDA();
  auto gpu = bf16_gpu();
  auto cpu = make_cpu_ops();
  for (const Case& c : cases()) {
    const Result got = run_window(*gpu, DType::f32, c.s), want = run_window(*cpu, DType::f64, c.s);
    expect_close(got, want, kWindowNames, std::string("window ") + c.name);
  }
}

TEST(CudaTensorCoreAttention, CompressedMatchesFloat64Reference) {
  TLS_REQUIRE_CUDA();
  auto gpu = bf16_gpu();
  auto cpu = make_cpu_ops();
  for (const Case& c : cases()) {
    const Result got = run_chunk(*gpu, DType::f32, c), want = run_chunk(*cpu, DType::f64, c);
    expect_close(got, want, kChunkNames, std::string("compressed ") + c.name);
  }
}

// d_head 24 is not a multiple of 16: bf16 mode runs the float32 attention, bit for bit.
TEST(CudaTensorCoreAttention, OtherHeadSizesKeepTheFloat32Kernels) {
  TLS_REQUIRE_CUDA();
  auto bf16 = bf16_gpu();
  auto exact = make_ops(Device::cuda, 0);
  Case c = cases()[0];
  c.s.d_head = 24;
  const Result a = run_window(*bf16, DType::f32, c.s), b = run_window(*exact, DType::f32, c.s);
  EXPECT_EQ(a.tensors, b.tensors);
  const Result ca = run_chunk(*bf16, DType::f32, c), cb = run_chunk(*exact, DType::f32, c);
  EXPECT_EQ(ca.tensors, cb.tensors);
}

// The backward has no atomics: two runs give the same bits, in every precision.
TEST(CudaTensorCoreAttention, BackwardIsDeterministic) {
  TLS_REQUIRE_CUDA();
  for (GemmInputs mode : {GemmInputs::exact, GemmInputs::bf16})
    for (DType dt : {DType::f32, DType::f64}) {
      if (dt == DType::f64 && mode != GemmInputs::exact) continue;
      auto gpu = make_ops(Device::cuda, 0);
      gpu->set_gemm_inputs(mode);
      for (const Case& c : cases()) {
        EXPECT_EQ(run_window(*gpu, dt, c.s).tensors, run_window(*gpu, dt, c.s).tensors)
            << c.name << " " << to_string(mode) << " " << dtype_name(dt);
        EXPECT_EQ(run_chunk(*gpu, dt, c).tensors, run_chunk(*gpu, dt, c).tensors)
            << c.name << " " << to_string(mode) << " " << dtype_name(dt);
      }
    }
}

// Three AdamW updates of a small model (d_head 16: the tensor-core attention under bf16):
// the loss of every step and every parameter agree bit for bit between two runs.
std::vector<std::vector<double>> train(GemmInputs mode, std::vector<double>& losses) {
  auto ops = make_ops(Device::cuda, 0);
  ops->set_gemm_inputs(mode);
  ModelConfig cfg = testing::tiny_training_model(0.1, 0.1);
  cfg.n_head = 2;  // d_head 16
  TransformerLSModel model(*ops, cfg, DType::f32);
  initialize_parameters(*ops, model, 3);
  OptimizerSettings opt;
  opt.lr = 1e-3;
  AdamW adam(*ops, model.parameters(), opt);
  const int64_t B = 2, T = cfg.tokens_per_sample;
  ModelState state = model.initial_state(B);
  for (int64_t step = 1; step <= 3; ++step) {
    std::vector<double> tok(static_cast<size_t>(B * T)), tgt(tok.size());
    for (size_t i = 0; i < tok.size(); ++i) {
      tok[i] = static_cast<double>((i * 37 + static_cast<size_t>(step) * 11) % 256);
      tgt[i] = static_cast<double>((i * 53 + 5) % 256);
    }
    Tensor tokens = ops->empty({B, T}, DType::i32), targets = ops->empty({B, T}, DType::i32);
    ops->from_host(tokens, tok);
    ops->from_host(targets, tgt);
    PassContext ctx;
    ctx.training = true;
    ctx.seed = 5;
    ctx.step = step;
    ctx.dropout = cfg.dropout;
    ctx.emb_dropout = cfg.emb_dropout;
    model.zero_grad();
    ModelSaved saved;
    const double nll = model.forward(tokens, targets, state, saved, ctx);
    model.backward(saved, 1.0 / static_cast<double>(saved.n_targets), ctx);
    adam.step(step);
    losses.push_back(nll);
  }
  std::vector<std::vector<double>> params;
  for (Parameter* p : model.parameters()) params.push_back(ops->to_host(p->value));
  return params;
}

TEST(CudaTensorCoreAttention, TrainingRunsRepeatBitForBit) {
  TLS_REQUIRE_CUDA();
  for (GemmInputs mode : {GemmInputs::exact, GemmInputs::bf16}) {
    std::vector<double> la, lb;
    const auto a = train(mode, la), b = train(mode, lb);
    EXPECT_EQ(la, lb) << to_string(mode);
    EXPECT_TRUE(a == b) << to_string(mode) << ": parameters differ between two runs";
  }
}

std::string cuda_binary() {
#ifdef TLS_CUDA_PROGRAM
  return TLS_CUDA_PROGRAM;
#else
  return testing::tls_dist_binary();
#endif
}

// Every dataset under /model and /optimizer of a checkpoint, in name order.
std::vector<std::vector<double>> checkpoint_state(const std::string& path) {
  Hdf5Reader r(path);
  std::vector<std::vector<double>> out;
  for (const char* group : {"/model", "/optimizer/exp_avg", "/optimizer/exp_avg_sq"})
    for (const std::string& name : r.list(group))
      out.push_back(r.read_doubles(std::string(group) + "/" + name));
  return out;
}

TEST(CudaTensorCoreAttention, ResumedBf16RunEqualsAnUninterruptedOne) {
  TLS_REQUIRE_CUDA();
  const std::string dir = testing::scratch_dir("cuda_tc_resume");
  // d_head 16: the tensor-core attention; dropout on.
  const std::string train =
      cuda_binary() +
      " train --device cuda --precision bf16 --n-layer 2 --d-model 32 --n-head 2 --d-inner 64"
      " --chunk-size 8 --chunk-rank 1 --window-len 16 --mem-len 32 --tokens-per-sample 32"
      " --batch-size 4 --dropout 0.1 --log-interval 1 --validate-interval 0 --train-data " +
      std::string(TLS_TEST_DATA_DIR) + "/english.txt";
  testing::ProcessResult r =
      testing::run_command(train + " --max-update 4 --save-interval 4 --save-dir " + dir + "/a");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = testing::run_command(train + " --max-update 2 --save-interval 2 --save-dir " + dir + "/b");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = testing::run_command(train + " --max-update 4 --save-interval 4 --save-dir " + dir + "/b");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("resum"), std::string::npos) << r.output;  // from checkpoint_2
  const auto a = checkpoint_state(dir + "/a/checkpoint_4.h5"),
             b = checkpoint_state(dir + "/b/checkpoint_4.h5");
  ASSERT_FALSE(a.empty());
  EXPECT_TRUE(a == b) << "the resumed run's parameters or moments differ";
}

}  // namespace
}  // namespace tls::test
