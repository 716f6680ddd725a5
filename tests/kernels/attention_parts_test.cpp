// The two attention kernels and their merge against a plain dense reference: for every query
// build the full row of [compressed ; window] scores with the visibility rule of
// docs/DESIGN.md 1.1, one softmax, one weighted sum. The backward kernels are checked against
// finite differences of the forward pipeline (window + chunk + merge) in float64.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "kernels/cpu/chunk_fused_kernels.h"
#include "kernels/ops.h"
#include "support/gradcheck.h"

namespace tls::testing {
namespace {

struct Inputs {
  AttentionShape s;
  int64_t n_slots = 0, n_pos = 0;
  Tensor q, keys, values, rel, rw, rr, khat, vhat, pos;
};

Inputs make_inputs(Ops& ops, AttentionShape s, int64_t n_slots, int64_t n_pos, uint64_t seed) {
  Inputs in;
  in.s = s;
  in.n_slots = n_slots;
  in.n_pos = n_pos;
  const int64_t dl = s.n_head * s.d_head;
  std::mt19937_64 rng(seed);
  auto make = [&](std::vector<int64_t> shape) {
    Tensor t = ops.empty(shape, DType::f64);
    fill_normal(t, rng, 0.0, 0.7);
    return t;
  };
  in.q = make({s.batch, s.tokens, dl});
  in.keys = make({s.batch, s.window + s.tokens, dl});
  in.values = make({s.batch, s.window + s.tokens, dl});
  in.rel = make({s.window, dl});
  in.rw = make({dl});
  in.rr = make({dl});
  in.khat = make({s.batch, n_slots, dl});
  in.vhat = make({s.batch, n_slots, dl});
  in.pos = make({n_pos, dl});
  return in;
}

Tensor to_dtype(Ops& ops, const Tensor& x, DType dtype) {
  Tensor y = ops.empty(x.shape(), dtype);
  ops.copy(y, x);
  return y;
}

// Dense reference: out[b, t, h] from one softmax over every visible score.
std::vector<double> dense_reference(const Inputs& in) {
  const AttentionShape& s = in.s;
  const int64_t dl = s.n_head * s.d_head, dh = s.d_head;
  auto at = [](const Tensor& t, int64_t i) { return t.data<double>()[i]; };
  std::vector<double> out(static_cast<size_t>(s.batch * s.tokens * dl));
  for (int64_t b = 0; b < s.batch; ++b)
    for (int64_t h = 0; h < s.n_head; ++h)
      for (int64_t t = 0; t < s.tokens; ++t) {
        std::vector<double> scores;
        std::vector<const double*> vals;
        const int64_t g_q = s.first_query_chunk + t / s.chunk_size;
        for (int64_t g = 0; g * s.chunk_rank < in.n_slots; ++g)
          for (int64_t k = 0; k < s.chunk_rank; ++k) {
            if (g >= g_q) continue;  // the chunk mask
            const int64_t slot = g * s.chunk_rank + k;
            const int64_t id = std::min((g_q - g) * s.chunk_rank - 1 - k, in.n_pos - 1);
            double sc = 0;
            for (int64_t e = 0; e < dh; ++e)
              sc += at(in.q, (b * s.tokens + t) * dl + h * dh + e) *
                    (at(in.khat, (b * in.n_slots + slot) * dl + h * dh + e) +
                     at(in.pos, id * dl + h * dh + e));
            scores.push_back(sc);
            vals.push_back(in.vhat.data<double>() + (b * in.n_slots + slot) * dl + h * dh);
          }
        for (int64_t delta = 0; delta < s.window; ++delta) {
          const int64_t row = b * (s.window + s.tokens) + t + s.window - delta;
          double sc = 0;
          for (int64_t e = 0; e < dh; ++e) {
            const double qv = at(in.q, (b * s.tokens + t) * dl + h * dh + e);
            sc += (qv + at(in.rw, h * dh + e)) * at(in.keys, row * dl + h * dh + e) +
                  (qv + at(in.rr, h * dh + e)) * at(in.rel, delta * dl + h * dh + e);
          }
          scores.push_back(sc);
          vals.push_back(in.values.data<double>() + row * dl + h * dh);
        }
        double mx = -INFINITY, total = 0;
        for (double v : scores) mx = std::max(mx, v);
        for (double v : scores) total += std::exp(v - mx);
        for (size_t j = 0; j < scores.size(); ++j)
          for (int64_t e = 0; e < dh; ++e)
            out[static_cast<size_t>((b * s.tokens + t) * dl + h * dh + e)] +=
                std::exp(scores[j] - mx) / total * vals[j][e];
      }
  return out;
}

struct Forward {
  Tensor out, lse;
};

Forward run_forward(Ops& ops, const Inputs& in, DType dtype) {
  const AttentionShape& s = in.s;
  const int64_t dl = s.n_head * s.d_head;
  auto c = [&](const Tensor& t) { return to_dtype(ops, t, dtype); };
  Tensor out_w = ops.empty({s.batch, s.tokens, dl}, dtype),
         lse_w = ops.empty({s.batch, s.n_head, s.tokens}, dtype);
  Tensor out_c = ops.empty({s.batch, s.tokens, dl}, dtype),
         lse_c = ops.empty({s.batch, s.n_head, s.tokens}, dtype);
  ops.window_attention_forward(out_w, lse_w, c(in.q), c(in.keys), c(in.values), c(in.rel), c(in.rw),
                               c(in.rr), s);
  ops.chunk_attention_forward(out_c, lse_c, c(in.q), c(in.khat), c(in.vhat), c(in.pos), s);
  Forward f{ops.empty({s.batch, s.tokens, dl}, dtype),
            ops.empty({s.batch, s.n_head, s.tokens}, dtype)};
  ops.attention_merge(f.out, f.lse, out_c, lse_c, out_w, lse_w, s);
  return f;
}

// A float64 gradient for the merged output [B, T, H d_h], normally distributed.
Tensor random_output_gradient(Ops& ops, const AttentionShape& s, std::mt19937_64& rng) {
  Tensor probe = ops.empty({s.batch, s.tokens, s.n_head * s.d_head}, DType::f64);
  fill_normal(probe, rng);
  return probe;
}

AttentionShape shape(int64_t T, int64_t w, int64_t c, int64_t r, int64_t first_chunk);
AttentionShape wide_heads(int64_t T, int64_t w, int64_t c, int64_t r, int64_t first_chunk) {
  AttentionShape s = shape(T, w, c, r, first_chunk);
  s.batch = 1;
  s.n_head = 2;
  s.d_head = 80;
  return s;
}

AttentionShape shape(int64_t T, int64_t w, int64_t c, int64_t r, int64_t first_chunk) {
  AttentionShape s;
  s.batch = 2;
  s.tokens = T;
  s.n_head = 3;
  s.d_head = 5;
  s.window = w;
  s.chunk_size = c;
  s.chunk_rank = r;
  s.first_query_chunk = first_chunk;
  return s;
}

struct Case {
  const char* name;
  AttentionShape s;
  int64_t n_slots, n_pos;
};
void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

std::vector<Case> cases() {
  return {
      {"basic", shape(16, 4, 4, 1, 2), 6, 6},
      {"rank2_clamped_pos", shape(12, 6, 3, 2, 3), 14, 4},
      {"query_chunk_zero_sees_only_window", shape(8, 4, 4, 1, 0), 2, 2},
      {"single_chunk", shape(4, 4, 4, 3, 1), 6, 6},
      {"partial_window_tile", shape(40, 8, 4, 1, 2), 12, 12},
      {"long_window_several_tiles", shape(96, 64, 8, 2, 0), 24, 24},
      // Several query tiles (256 rows) and slot blocks (256 slots) of the CPU kernel, with
      // clamped positional ids in some blocks only.
      {"several_query_tiles_and_slot_blocks", shape(640, 8, 2, 1, 300), 620, 400},
      // Heads wider than the fused kernels' 64-column panels (80 = 64 + a masked 16), chunks of
      // 16 rows (two row groups of the scores kernel), and clamped ids.
      {"wide_heads_chunks_of_16", wide_heads(96, 8, 16, 1, 4), 40, 20},
      // khat ending before the slots the queries may see (one owner's slot group under
      // sequence parallelism, the query chunks shifted by the group's first chunk): every slot
      // visible to every query, with and without clamped ids.
      {"slot_group_every_id_clamped", shape(16, 4, 4, 2, 9), 6, 5},
      {"slot_group_no_id_clamped", shape(16, 4, 4, 1, 5), 3, 40},
      {"slot_group_partly_visible", shape(300, 4, 4, 1, 2), 40, 30},
  };
}

// Sets the compressed part's float32 path for one scope (process-wide; tests run serially).
struct PathScope {
  explicit PathScope(cpu::ChunkAttentionPath p) { cpu::set_chunk_attention_path(p); }
  ~PathScope() { cpu::set_chunk_attention_path(cpu::ChunkAttentionPath::automatic); }
};

struct NamedPath {
  const char* name;
  cpu::ChunkAttentionPath path;
};
// The float32 paths this CPU runs (the fused one on each instruction set it has).
std::vector<NamedPath> float_paths() {
  std::vector<NamedPath> paths = {{"gemm", cpu::ChunkAttentionPath::gemm}};
  for (cpu::FusedLanes lanes : cpu::fused_lanes_available())
    paths.push_back(lanes == cpu::FusedLanes::avx512
                        ? NamedPath{"fused avx512", cpu::ChunkAttentionPath::fused_avx512}
                        : NamedPath{"fused avx2", cpu::ChunkAttentionPath::fused_avx2});
  return paths;
}

class AttentionParts : public ::testing::TestWithParam<Case> {};

TEST_P(AttentionParts, ForwardMatchesDenseReference) {
  auto ops = make_cpu_ops();
  const Case& c = GetParam();
  Inputs in = make_inputs(*ops, c.s, c.n_slots, c.n_pos, 17);
  const std::vector<double> want = dense_reference(in);
  EXPECT_LE(relative_error(ops->to_host(run_forward(*ops, in, DType::f64).out), want), 1e-13);
  for (const NamedPath& p : float_paths()) {
    PathScope scope(p.path);
    EXPECT_LE(relative_error(ops->to_host(run_forward(*ops, in, DType::f32).out), want), 1e-5)
        << p.name << " path";
  }
}

// The float32 backward of each compressed-attention path against the float64 one (which the
// finite differences below check): every gradient, with and without the optional ones.
TEST_P(AttentionParts, Float32ChunkBackwardMatchesFloat64OnEveryPath) {
  auto ops = make_cpu_ops();
  const Case& c = GetParam();
  Inputs in = make_inputs(*ops, c.s, c.n_slots, c.n_pos, 29);
  const AttentionShape& s = in.s;
  std::mt19937_64 rng(7);
  Tensor probe = random_output_gradient(*ops, s, rng);
  auto backward = [&](DType dtype, bool with_optional) {
    auto cv = [&](const Tensor& t) { return to_dtype(*ops, t, dtype); };
    Forward f = run_forward(*ops, in, dtype);
    Tensor dout = cv(probe);
    Tensor delta = ops->empty(f.lse.shape(), dtype);
    ops->attention_delta(delta, dout, f.out, s);
    auto z = [&](const Tensor& t) { return ops->zeros(t.shape(), dtype); };
    std::vector<Tensor> grads = {z(in.q), z(in.khat), z(in.vhat), z(in.pos)};
    Tensor none;
    ops->chunk_attention_backward(grads[0], with_optional ? grads[1] : none, grads[2],
                                  with_optional ? grads[3] : none, dout, f.lse, delta, cv(in.q),
                                  cv(in.khat), cv(in.vhat), cv(in.pos), s);
    std::vector<std::vector<double>> host;
    for (const Tensor& g : grads) host.push_back(ops->to_host(g));
    return host;
  };
  const auto want = backward(DType::f64, true);
  const char* names[] = {"q", "khat", "vhat", "pos"};
  for (const NamedPath& p : float_paths()) {
    PathScope scope(p.path);
    for (bool with_optional : {true, false}) {
      const auto got = backward(DType::f32, with_optional);
      for (size_t k = 0; k < got.size(); ++k) {
        if (!with_optional && (k == 1 || k == 3)) continue;
        EXPECT_LE(relative_error(got[k], want[k]), 2e-5)
            << p.name << " path, d" << names[k] << (with_optional ? "" : " (without dkhat, dpos)");
      }
    }
  }
}

TEST_P(AttentionParts, BackwardMatchesFiniteDifferences) {
  auto ops = make_cpu_ops();
  const Case& c = GetParam();
  Inputs in = make_inputs(*ops, c.s, c.n_slots, c.n_pos, 23);
  const AttentionShape& s = in.s;
  std::mt19937_64 rng(5);
  Tensor probe = random_output_gradient(*ops, s, rng);
  auto loss = [&] { return dot(run_forward(*ops, in, DType::f64).out, probe); };

  Forward f = run_forward(*ops, in, DType::f64);
  Tensor delta = ops->empty(f.lse.shape(), DType::f64);
  ops->attention_delta(delta, probe, f.out, s);
  auto z = [&](const Tensor& t) { return ops->zeros(t.shape(), DType::f64); };
  Tensor dq = z(in.q), dk = z(in.keys), dv = z(in.values), drel = z(in.rel), drw = z(in.rw),
         drr = z(in.rr), dkhat = z(in.khat), dvhat = z(in.vhat), dpos = z(in.pos);
  ops->window_attention_backward(dq, dk, dv, drel, drw, drr, probe, f.lse, delta, in.q, in.keys,
                                 in.values, in.rel, in.rw, in.rr, s);
  ops->chunk_attention_backward(dq, dkhat, dvhat, dpos, probe, f.lse, delta, in.q, in.khat, in.vhat,
                                in.pos, s);
  // Central differences with eps = 1e-4: the loss sums thousands of terms, and with the default
  // 1e-5 its rounding over eps reached ~1e-9, close to the 1e-6 x 1e-3 bound; at 1e-4 the
  // truncation (eps^2) and the rounding balance, and every case stays under 4e-7.
  const auto check = [&](Tensor& x, const Tensor& g) {
    return max_gradient_error(x, g, loss, rng, 24, 1e-4);
  };
  EXPECT_LE(check(in.q, dq), 1e-6) << "q";
  EXPECT_LE(check(in.keys, dk), 1e-6) << "keys";
  EXPECT_LE(check(in.values, dv), 1e-6) << "values";
  EXPECT_LE(check(in.rel, drel), 1e-6) << "rel";
  EXPECT_LE(check(in.rw, drw), 1e-6) << "r_w_bias";
  EXPECT_LE(check(in.rr, drr), 1e-6) << "r_r_bias";
  EXPECT_LE(check(in.khat, dkhat), 1e-6) << "khat";
  EXPECT_LE(check(in.vhat, dvhat), 1e-6) << "vhat";
  EXPECT_LE(check(in.pos, dpos), 1e-6) << "pos";
}

INSTANTIATE_TEST_SUITE_P(Shapes, AttentionParts, ::testing::ValuesIn(cases()),
                         [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace tls::testing
