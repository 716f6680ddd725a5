// The CUDA backend against the CPU reference: every op runs on both backends from the same
// random non-zero inputs (and, for backward ops, the same non-zero gradients to accumulate
// into); every tensor must agree afterwards, within 1e-5 relative in float32 and 1e-10 in
// float64. Without a GPU every test is skipped with the reason (cudaGetDeviceCount's error or
// a count of 0), except NoDevice, which checks that asking for CUDA then fails clearly.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "kernels/device.h"
#include "kernels/error.h"
#include "kernels/ops.h"

namespace tls::test {
namespace {

// One tensor of a case: shape, dtype and initial values (random non-zero unless given).
struct Buf {
  Buf(std::vector<int64_t> s, DType dt, std::vector<double> v = {})
      : shape(std::move(s)), dtype(dt), values(std::move(v)) {}
  std::vector<int64_t> shape;
  DType dtype = DType::f32;
  std::vector<double> values;  // empty: random
};

int64_t numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return n;
}

std::vector<double> random_nonzero(int64_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<double> mag(0.1, 1.0);
  std::bernoulli_distribution neg(0.5);
  std::vector<double> v(static_cast<size_t>(n));
  for (auto& x : v) x = neg(gen) ? -mag(gen) : mag(gen);
  return v;
}

using OpFn = std::function<void(Ops&, std::vector<Tensor>&)>;

class CudaOpsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (cuda_device_count() == 0) GTEST_SKIP() << cuda_unavailable_reason();
    gpu_ = make_ops(Device::cuda, 0);
    cpu_ = make_cpu_ops();
  }

  static double tol(DType dt) { return dt == DType::f64 ? 1e-10 : 1e-5; }

  // The case's tensors on ops; as_f64: float32 tensors become float64 ones holding the same
  // (float32-rounded) values, the input of the exact reference.
  std::vector<Tensor> make(Ops& ops, const std::vector<Buf>& bufs, bool as_f64 = false) {
    std::vector<Tensor> out;
    uint32_t seed = 1234;
    for (const Buf& b : bufs) {
      ++seed;
      std::vector<double> v = b.values.empty() ? random_nonzero(numel(b.shape), seed) : b.values;
      const bool widen = as_f64 && b.dtype == DType::f32;
      if (widen)
        for (double& x : v) x = static_cast<float>(x);
      Tensor t = ops.empty(b.shape, widen ? DType::f64 : b.dtype);
      ops.from_host(t, v);
      out.push_back(t);
    }
    return out;
  }

  // Runs f on both backends and compares every defined tensor afterwards, within tol(dtype)
  // relative (or within tolerance when it is > 0). A float32 element outside that bound still
  // passes when it is as close to the exact answer (the CPU backend in float64 on the same
  // float32 inputs) as the CPU's own float32 result is: sums over hundreds of terms (attention
  // gradients) differ between two float32 orders by more than 1e-5, and neither is wrong.
  void compare(const std::string& what, const std::vector<Buf>& bufs, const OpFn& f,
               double tolerance = 0) {
    std::vector<Tensor> c = make(*cpu_, bufs), g = make(*gpu_, bufs);
    f(*cpu_, c);
    f(*gpu_, g);
    const bool any_f32 =
        std::any_of(bufs.begin(), bufs.end(), [](const Buf& b) { return b.dtype == DType::f32; });
    std::vector<Tensor> exact;
    if (any_f32 && tolerance == 0) {
      exact = make(*cpu_, bufs, true);
      f(*cpu_, exact);
    }
    for (size_t i = 0; i < bufs.size(); ++i) {
      const std::vector<double> want = cpu_->to_host(c[i]), got = gpu_->to_host(g[i]);
      ASSERT_EQ(want.size(), got.size());
      const double t = tolerance > 0 ? tolerance : tol(bufs[i].dtype);
      std::vector<double> ref;
      double cpu_error = 0;  // the CPU float32 result's largest error against the exact one
      if (!exact.empty() && bufs[i].dtype == DType::f32) {
        ref = cpu_->to_host(exact[i]);
        for (size_t k = 0; k < ref.size(); ++k)
          if (std::isfinite(ref[k]))
            cpu_error =
                std::max(cpu_error, std::abs(want[k] - ref[k]) / std::max(1.0, std::abs(ref[k])));
      }
      int failures = 0;
      for (size_t k = 0; k < want.size() && failures < 5; ++k) {
        const bool both_inf = std::isinf(want[k]) && want[k] == got[k];
        const bool near_cpu = std::abs(got[k] - want[k]) <= t * std::max(1.0, std::abs(want[k]));
        const bool near_exact =
            !ref.empty() && std::abs(got[k] - ref[k]) <=
                                std::max(t, 4 * cpu_error) * std::max(1.0, std::abs(ref[k]));
        if (!both_inf && !near_cpu && !near_exact) {
          ADD_FAILURE() << what << " (" << dtype_name(bufs[i].dtype) << "): tensor " << i
                        << " element " << k << ": gpu " << got[k] << ", cpu " << want[k]
                        << (ref.empty() ? std::string()
                                        : ", exact " + std::to_string(ref[k]) +
                                              " (4x the cpu float32 error: " +
                                              std::to_string(cpu_error) + " relative)");
          ++failures;
        }
      }
    }
  }

  std::unique_ptr<Ops> gpu_, cpu_;
};

const DType kFloatTypes[] = {DType::f32, DType::f64};

TEST(CudaAvailability, NoDeviceMeansAClearError) {
  if (cuda_device_count() > 0) GTEST_SKIP() << "a CUDA device is present; this checks its absence";
  EXPECT_EQ(cuda_device_count(), 0);
  EXPECT_NE(cuda_unavailable_reason().find("no CUDA device is available"), std::string::npos)
      << cuda_unavailable_reason();
  try {
    make_ops(Device::cuda, 0);
    ADD_FAILURE() << "make_ops(Device::cuda, 0) did not throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no CUDA device is available"), std::string::npos)
        << e.what();
  }
  EXPECT_EQ(make_ops(Device::cpu, 0)->device(), Device::cpu);
}

TEST_F(CudaOpsTest, MemoryOps) {
  for (DType dt : kFloatTypes) {
    compare("fill", {{{3, 5}, dt}}, [](Ops& o, auto& t) { o.fill(t[0], 0.25); });
    compare("copy converting", {{{4, 6}, dt}, {{24}, dt == DType::f32 ? DType::f64 : DType::f32}},
            [](Ops& o, auto& t) { o.copy(t[0], t[1]); });
    compare("copy_rows", {{{2, 7, 3}, dt}, {{2, 5, 3}, dt}},
            [](Ops& o, auto& t) { o.copy_rows(t[0], 2, t[1], 1, 4); });
    // Overlapping rows of one tensor, both directions (the CPU backend moves them as memmove).
    compare("copy_rows within one tensor", {{{2, 7, 3}, dt}}, [](Ops& o, auto& t) {
      o.copy_rows(t[0], 0, t[0], 2, 5);
      o.copy_rows(t[0], 1, t[0], 0, 4);
    });
    compare("add_rows", {{{2, 7, 3}, dt}, {{2, 5, 3}, dt}},
            [](Ops& o, auto& t) { o.add_rows(t[0], 1, t[1], 0, 5); });
  }
  compare("int32 round trip", {{{5}, DType::i32, {1, -2, 3, 7, 0}}}, [](Ops&, auto&) {});
}

TEST_F(CudaOpsTest, ElementwiseAndReductions) {
  for (DType dt : kFloatTypes) {
    compare("scale", {{{37, 3}, dt}}, [](Ops& o, auto& t) { o.scale(t[0], -1.5); });
    compare("axpy", {{{111}, dt}, {{111}, dt}}, [](Ops& o, auto& t) { o.axpy(0.75, t[0], t[1]); });
    compare("add_bias", {{{9, 13}, dt}, {{13}, dt}},
            [](Ops& o, auto& t) { o.add_bias(t[0], t[1]); });
    compare("sum_rows", {{{700, 45}, dt}, {{45}, dt}},
            [](Ops& o, auto& t) { o.sum_rows(t[0], t[1]); });
    std::vector<double> v = random_nonzero(100003, 7);
    Tensor c = cpu_->empty({100003}, dt), g = gpu_->empty({100003}, dt);
    cpu_->from_host(c, v);
    gpu_->from_host(g, v);
    EXPECT_NEAR(gpu_->sum(g), cpu_->sum(c), 1e-9 * 100003);
    EXPECT_NEAR(gpu_->sum_squares(g), cpu_->sum_squares(c), 1e-9 * 100003);
    EXPECT_TRUE(gpu_->all_finite(g));
    v[77777] = std::nan("");
    gpu_->from_host(g, v);
    EXPECT_FALSE(gpu_->all_finite(g));
  }
}

TEST_F(CudaOpsTest, Gemm) {
  for (DType dt : kFloatTypes)
    for (bool ta : {false, true})
      for (bool tb : {false, true}) {
        const int64_t m = 33, n = 17, k = 29;
        std::vector<int64_t> as = ta ? std::vector<int64_t>{k, m} : std::vector<int64_t>{m, k};
        std::vector<int64_t> bs = tb ? std::vector<int64_t>{n, k} : std::vector<int64_t>{k, n};
        compare("gemm", {{as, dt}, {bs, dt}, {{m, n}, dt}},
                [=](Ops& o, auto& t) { o.gemm(ta, tb, 0.5, t[0], t[1], 0.25, t[2]); });
      }
}

// --precision bf16: both backends round the float32 operands to bf16 the same way (to nearest
// even) and accumulate in float32, so they agree far inside a 1e-2 tolerance (which would also
// pass unrounded operands: 1e-4 would not). --allow-tf32 against the exact CPU product: TF32
// keeps 10 mantissa bits.
TEST_F(CudaOpsTest, GemmOnBf16AndTf32Operands) {
  for (auto [m, n, k] : {std::array<int64_t, 3>{33, 17, 29}, {300, 257, 513}})
    for (bool ta : {false, true})
      for (bool tb : {false, true}) {
        std::vector<int64_t> as = ta ? std::vector<int64_t>{k, m} : std::vector<int64_t>{m, k};
        std::vector<int64_t> bs = tb ? std::vector<int64_t>{n, k} : std::vector<int64_t>{k, n};
        const std::vector<Buf> bufs = {{as, DType::f32}, {bs, DType::f32}, {{m, n}, DType::f32}};
        auto product = [=](Ops& o, auto& t) { o.gemm(ta, tb, 0.5, t[0], t[1], 0.25, t[2]); };
        gpu_->set_gemm_inputs(GemmInputs::bf16);
        cpu_->set_gemm_inputs(GemmInputs::bf16);
        compare("bf16 gemm", bufs, product, 1e-4);
        gpu_->set_gemm_inputs(GemmInputs::tf32);
        cpu_->set_gemm_inputs(GemmInputs::exact);
        compare("tf32 gemm", bufs, product, 1e-2);
        gpu_->set_gemm_inputs(GemmInputs::exact);
      }
}

TEST_F(CudaOpsTest, LayerNorm) {
  for (DType dt : kFloatTypes) {
    const int64_t R = 19, C = 70;
    compare("layernorm forward+backward",
            {{{R, C}, dt},
             {{C}, dt},
             {{C}, dt},
             {{R, C}, dt},
             {{R}, dt},
             {{R}, dt},
             {{R, C}, dt},
             {{R, C}, dt},
             {{C}, dt},
             {{C}, dt}},
            [](Ops& o, auto& t) {
              o.layernorm_forward(t[3], t[4], t[5], t[0], t[1], t[2], 1e-5);
              o.layernorm_backward(t[7], t[8], t[9], t[6], t[0], t[1], t[4], t[5]);
            });
    compare("split layernorm",
            {{{R, C}, dt},
             {{C}, dt},
             {{C}, dt},
             {{R}, dt},
             {{R}, dt},
             {{R}, dt},
             {{R, C}, dt},
             {{R, C}, dt},
             {{2 * R}, dt},
             {{R, C}, dt},
             {{C}, dt},
             {{C}, dt}},
            [](Ops& o, auto& t) {
              Tensor none;
              o.fill(t[3], 0.0);
              o.row_sum(t[3], t[0], none, false);
              o.scale(t[3], 1.0 / 140);  // as if the other half of 140 features summed to zero
              o.fill(t[4], 0.0);
              o.row_sum(t[4], t[0], t[3], true);
              o.layernorm_normalize(t[6], t[5], t[0], t[3], t[4], t[1], t[2], 140, 1e-5);
              o.layernorm_backward_sums(t[8], t[7], t[0], t[1], t[3], t[5]);
              o.layernorm_backward_apply(t[9], t[10], t[11], t[7], t[0], t[1], t[3], t[5], t[8],
                                         140);
            });
  }
}

TEST_F(CudaOpsTest, Activations) {
  for (DType dt : kFloatTypes) {
    const std::vector<int64_t> s{41, 7};
    compare("gelu", {{s, dt}, {s, dt}, {s, dt}, {s, dt}}, [](Ops& o, auto& t) {
      o.gelu_forward(t[1], t[0]);
      o.gelu_backward(t[3], t[2], t[0]);
    });
    compare("relu", {{s, dt}, {s, dt}, {s, dt}, {s, dt}}, [](Ops& o, auto& t) {
      o.relu_forward(t[1], t[0]);
      o.relu_backward(t[3], t[2], t[0]);
    });
  }
}

TEST_F(CudaOpsTest, SoftmaxFamily) {
  for (DType dt : kFloatTypes) {
    const std::vector<int64_t> s{23, 67};
    compare("softmax", {{s, dt}, {s, dt}, {s, dt}, {s, dt}}, [](Ops& o, auto& t) {
      o.softmax_forward(t[1], t[0]);
      o.softmax_backward(t[3], t[2], t[1]);
    });
    std::vector<double> targets(23);
    for (size_t i = 0; i < targets.size(); ++i) targets[i] = static_cast<double>((i * 7) % 67);
    targets[5] = -1;  // skipped row
    compare("log_softmax + nll",
            {{s, dt}, {s, dt}, {{23}, DType::i32, targets}, {{23}, dt}, {s, dt}},
            [](Ops& o, auto& t) {
              o.log_softmax_forward(t[1], t[0]);
              o.nll_forward(t[3], t[1], t[2]);
              o.log_softmax_nll_backward(t[4], t[1], t[2], 0.125);
            });
    const std::vector<int64_t> cs{2, 12, 5};
    compare("chunk softmax", {{cs, dt}, {cs, dt}, {cs, dt}, {cs, dt}}, [](Ops& o, auto& t) {
      o.chunk_softmax_forward(t[1], t[0], 4);
      o.chunk_softmax_backward(t[3], t[2], t[1], 4);
    });
  }
  Tensor lp = gpu_->zeros({2, 3}, DType::f32), loss = gpu_->empty({2}, DType::f32);
  Tensor tg = gpu_->empty({2}, DType::i32);
  gpu_->from_host(tg, {0, 3});
  EXPECT_THROW(gpu_->nll_forward(loss, lp, tg), Error);
}

TEST_F(CudaOpsTest, EmbeddingDropoutSinusoid) {
  for (DType dt : kFloatTypes) {
    std::vector<double> tokens{3, 0, 9, 3, 3, 7, 1, 9};
    compare("embedding",
            {{{10, 6}, dt}, {{8}, DType::i32, tokens}, {{8, 6}, dt}, {{8, 6}, dt}, {{10, 6}, dt}},
            [](Ops& o, auto& t) {
              o.embedding_forward(t[2], t[0], t[1], 2.5);
              o.embedding_backward(t[4], t[3], t[1], 2.5);
            });
    DropoutKey key;
    key.seed = 42;
    key.step = 3;
    key.tensor_id = 99;
    key.t_local = 5;
    key.t_global = 20;
    key.t_offset = 10;
    key.b_offset = 1;
    key.cols_global = 16;
    key.col_offset = 4;
    compare("dropout", {{{2 * 5, 8}, dt}},
            [key](Ops& o, auto& t) { o.dropout_apply(t[0], 0.3, key); });
    compare("sinusoid", {{{5, 12}, dt}}, [](Ops& o, auto& t) {
      o.sinusoid_forward(t[0], {0.0, 1.0, 17.0, 511.0, 131071.0});
    });
  }
  Tensor table = gpu_->zeros({4, 2}, DType::f32), out = gpu_->empty({1, 2}, DType::f32);
  Tensor ids = gpu_->empty({1}, DType::i32);
  gpu_->from_host(ids, {4});
  EXPECT_THROW(gpu_->embedding_forward(out, table, ids, 1.0), Error);
}

TEST_F(CudaOpsTest, CompressChunks) {
  for (DType dt : kFloatTypes) {
    // B 2, G 3 chunks of c 4, H 2 local heads of dh 5, r 2, weights for 3 heads, offset 1.
    const int64_t B = 2, G = 3, c = 4, H = 2, dh = 5, r = 2, Hall = 3;
    compare("compress",
            {{{B, G * c, H * dh}, dt},
             {{B, G * c, Hall * r}, dt},
             {{B, G * r, H * dh}, dt},
             {{B, G * r, H * dh}, dt},
             {{B, G * c, H * dh}, dt},
             {{B, G * c, Hall * r}, dt}},
            [=](Ops& o, auto& t) {
              o.compress_chunks_forward(t[2], t[0], t[1], c, r, H, 1);
              o.compress_chunks_backward(t[4], t[5], t[3], t[0], t[1], c, r, H, 1);
            });
  }
}

TEST_F(CudaOpsTest, AdamW) {
  for (DType dt : kFloatTypes) {
    std::vector<double> v2 = random_nonzero(300, 5);
    for (double& x : v2) x = std::abs(x);  // second moments are non-negative
    compare("adamw", {{{300}, dt}, {{300}, dt}, {{300}, dt}, {{300}, dt, v2}}, [](Ops& o, auto& t) {
      o.adamw_step(t[0], t[1], t[2], t[3], 1e-3, 0.9, 0.999, 1e-8, 0.01, 3);
    });
  }
}

// The attention parts on shapes that exercise partial query tiles, several key tiles per
// query tile, clamped positional ids, queries without visible compressed slots and slot groups
// that end before the slots their queries may see.
struct AttnCase {
  AttentionShape s;
  int64_t n_slots, n_pos;
};

std::vector<AttnCase> attention_cases() {
  std::vector<AttnCase> cases;
  AttentionShape a;  // small: B 2, T 36, H 2, dh 8, w 8, c 4, r 2, cache of 2 chunks
  a.batch = 2;
  a.tokens = 36;
  a.n_head = 2;
  a.d_head = 8;
  a.window = 8;
  a.chunk_size = 4;
  a.chunk_rank = 2;
  a.first_query_chunk = 2;
  cases.push_back({a, (2 + 9) * 2, 6});
  AttentionShape b;  // larger: T 80, dh 64, w 40 (> one key tile), no cache: chunk 0 sees nothing
  b.batch = 1;
  b.tokens = 80;
  b.n_head = 2;
  b.d_head = 64;
  b.window = 40;
  b.chunk_size = 16;
  b.chunk_rank = 1;
  b.first_query_chunk = 0;
  cases.push_back({b, 5, 64});
  // One sequence-parallel rank's slot groups: khat ends before the slots the queries may see.
  AttentionShape g = a;  // every slot visible to every query, every id clamped
  g.first_query_chunk = 9;
  cases.push_back({g, 6, 5});
  g.first_query_chunk = 3;  // the first chunks see part of the group, some ids clamped
  cases.push_back({g, 10, 9});
  return cases;
}

TEST_F(CudaOpsTest, WindowAttention) {
  for (DType dt : kFloatTypes)
    for (const AttnCase& ac : attention_cases()) {
      const AttentionShape s = ac.s;
      const int64_t B = s.batch, T = s.tokens, dl = s.n_head * s.d_head, w = s.window, H = s.n_head;
      // 0 q, 1 keys, 2 values, 3 rel, 4 rw, 5 rr, 6 out, 7 lse, 8 dout, 9 lse_m, 10 delta,
      // 11 dq, 12 dkeys, 13 dvalues, 14 drel, 15 drw, 16 drr
      std::vector<Buf> bufs{{{B, T, dl}, dt},
                            {{B, w + T, dl}, dt},
                            {{B, w + T, dl}, dt},
                            {{w, dl}, dt},
                            {{dl}, dt},
                            {{dl}, dt},
                            {{B, T, dl}, dt},
                            {{B, H, T}, dt},
                            {{B, T, dl}, dt},
                            {{B, H, T}, dt},
                            {{B, H, T}, dt},
                            {{B, T, dl}, dt},
                            {{B, w + T, dl}, dt},
                            {{B, w + T, dl}, dt},
                            {{w, dl}, dt},
                            {{dl}, dt},
                            {{dl}, dt}};
      compare("window attention", bufs, [s](Ops& o, auto& t) {
        o.window_attention_forward(t[6], t[7], t[0], t[1], t[2], t[3], t[4], t[5], s);
        // The backward with this part's own lse (as if there were no compressed part), and a
        // random delta: the kernels do not care where they come from.
        o.window_attention_backward(t[11], t[12], t[13], t[14], t[15], t[16], t[8], t[7], t[10],
                                    t[0], t[1], t[2], t[3], t[4], t[5], s);
      });
    }
}

TEST_F(CudaOpsTest, ChunkAttentionMergeDelta) {
  for (DType dt : kFloatTypes)
    for (const AttnCase& ac : attention_cases()) {
      const AttentionShape s = ac.s;
      const int64_t B = s.batch, T = s.tokens, dl = s.n_head * s.d_head, H = s.n_head;
      const int64_t S = ac.n_slots, P = ac.n_pos;
      // 0 q, 1 khat, 2 vhat, 3 pos, 4 out_c, 5 lse_c, 6 out_w (random), 7 lse_w (random),
      // 8 out, 9 lse, 10 dout, 11 delta, 12 dq, 13 dkhat, 14 dvhat, 15 dpos
      std::vector<Buf> bufs{{{B, T, dl}, dt}, {{B, S, dl}, dt}, {{B, S, dl}, dt}, {{P, dl}, dt},
                            {{B, T, dl}, dt}, {{B, H, T}, dt},  {{B, T, dl}, dt}, {{B, H, T}, dt},
                            {{B, T, dl}, dt}, {{B, H, T}, dt},  {{B, T, dl}, dt}, {{B, H, T}, dt},
                            {{B, T, dl}, dt}, {{B, S, dl}, dt}, {{B, S, dl}, dt}, {{P, dl}, dt}};
      compare("chunk attention + merge + delta", bufs, [s](Ops& o, auto& t) {
        o.chunk_attention_forward(t[4], t[5], t[0], t[1], t[2], t[3], s);
        o.attention_merge(t[8], t[9], t[4], t[5], t[6], t[7], s);
        o.attention_merge(t[6], t[7], t[4], t[5], t[6], t[7], s);  // in place, as the CPU allows
        o.attention_delta(t[11], t[10], t[8], s);
        o.chunk_attention_backward(t[12], t[13], t[14], t[15], t[10], t[9], t[11], t[0], t[1], t[2],
                                   t[3], s);
      });
    }
}

}  // namespace
}  // namespace tls::test
