// mpi-ranks: 1 2 4
// The parallel operations one by one (docs/DESIGN.md section 3), in float64, on every (tp, sp)
// layout of the world, dp taking the rest:
// - each forward against its definition, written with plain loops over values that any rank
//   can regenerate for any other rank (regenerable_values, tests/support/mpi_layouts.h);
// - each backward as the forward's adjoint, <f(x), y> = <x, f*(y)>. A replicated tensor (the
//   same on every rank of a group) enters an inner product once; a distributed one (a piece
//   per rank, or per-rank copies that may differ) enters as the sum over the group of the
//   ranks' local products. Both sides are then sums of the same products in different orders,
//   equal up to rounding;
// - the _start / wait forms against the blocking ones, bit for bit;
// - the bytes each call adds to traffic() (parallel/traffic.h), as parallel/README.md lists them.
// With one rank every group is a single process: the definitions still hold, the adjoints are
// trivially true.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "kernels/ops.h"
#include "layers/parameter.h"
#include "parallel/halo_exchange.h"
#include "parallel/mappings.h"
#include "parallel/mpi_comm.h"
#include "parallel/sequence_layout.h"
#include "parallel/tp_layernorm.h"
#include "parallel/traffic.h"
#include "support/mpi_layouts.h"
#include "training/gradient_reduction.h"

namespace tls {
namespace {

using testing::every_layout;
using testing::regenerable_values;

using Values = std::vector<double>;
using Shape = std::vector<int64_t>;

constexpr int64_t kF64 = 8;  // bytes per element

std::string name_of(const Topology& t) {
  return "tp " + std::to_string(t.layout.tp) + " sp " + std::to_string(t.layout.sp) + " dp " +
         std::to_string(t.layout.dp) + ", world rank " + std::to_string(t.world_rank);
}

// The world rank at a grid position: tp fastest, then sp, then dp (parallel/topology.h).
int world_rank_of(const Topology& t, int tp_rank, int sp_rank, int dp_rank) {
  return tp_rank + t.layout.tp * (sp_rank + t.layout.sp * dp_rank);
}

// The index of this rank's tp group: values drawn with it are replicated over tp.
int tp_group_of(const Topology& t) { return t.world_rank / t.layout.tp; }

int64_t numel_of(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

Tensor tensor_of(Ops& ops, const Shape& shape, const Values& values) {
  Tensor t = ops.empty(shape, DType::f64);
  ops.from_host(t, values);
  return t;
}

double dot(const Values& a, const Values& b) {
  if (a.size() != b.size()) {
    ADD_FAILURE() << "inner product of " << a.size() << " and " << b.size() << " values";
    return NAN;
  }
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// Reports the first element off by more than tol (one line, not one per element).
void expect_near(const Values& got, const Values& want, double tol, const std::string& what) {
  if (got.size() != want.size()) {
    ADD_FAILURE() << what << ": " << got.size() << " values, expected " << want.size();
    return;
  }
  for (size_t i = 0; i < got.size(); ++i)
    if (!(std::abs(got[i] - want[i]) <= tol)) {
      ADD_FAILURE() << what << "[" << i << "] = " << got[i] << ", expected " << want[i];
      return;
    }
}

// Two orders of summing the same products: equal up to rounding.
void expect_same_sum(double lhs, double rhs, const std::string& what) {
  const double scale = std::max({1.0, std::abs(lhs), std::abs(rhs)});
  EXPECT_NEAR(lhs, rhs, 1e-12 * scale) << what;
}

// ---- tp mappings (parallel/mappings.h) -----------------------------------------------------

TEST(CopyToTp, ForwardIsTheIdentityBackwardSumsOverTp) {
  auto ops = make_cpu_ops();
  const Shape shape{3, 5};
  const int64_t n = numel_of(shape);
  for (const Topology& t : every_layout()) {
    SCOPED_TRACE(name_of(t));
    const int tp = t.layout.tp;
    const Values x = regenerable_values(n, 1, tp_group_of(t));  // replicated over tp
    const Values y = regenerable_values(n, 2, t.world_rank);    // per rank
    const int64_t before = traffic().tensor;

    Tensor fx = tensor_of(*ops, shape, x);
    copy_to_tp_forward(t, fx);
    EXPECT_EQ(ops->to_host(fx), x);
    EXPECT_EQ(traffic().tensor, before);

    Tensor by = tensor_of(*ops, shape, y);
    copy_to_tp_backward(t, by);
    const Values back = ops->to_host(by);
    Values sum(static_cast<size_t>(n), 0.0);
    for (int r = 0; r < tp; ++r) {
      const Values yr = regenerable_values(n, 2, world_rank_of(t, r, t.sp_rank, t.dp_rank));
      for (size_t i = 0; i < sum.size(); ++i) sum[i] += yr[i];
    }
    expect_near(back, sum, 1e-14, "copy_to_tp_backward");
    EXPECT_EQ(traffic().tensor - before, ring_allreduce_bytes(n * kF64, tp));

    // f(x) = (x, ..., x) over tp, so <f(x), y> sums the ranks' products; x, f*(y) replicated.
    expect_same_sum(t.tp->allreduce_sum(dot(x, y)), dot(x, back), "adjoint");
  }
}

TEST(ReduceFromTp, ForwardSumsOverTpBackwardIsTheIdentity) {
  auto ops = make_cpu_ops();
  const Shape shape{4, 3};
  const int64_t n = numel_of(shape);
  for (const Topology& t : every_layout()) {
    SCOPED_TRACE(name_of(t));
    const int tp = t.layout.tp;
    const Values x = regenerable_values(n, 3, t.world_rank);    // per rank (partial sums)
    const Values y = regenerable_values(n, 4, tp_group_of(t));  // replicated over tp
    const int64_t before = traffic().tensor;

    Tensor fx = tensor_of(*ops, shape, x);
    reduce_from_tp_forward(t, fx);
    const Values forward = ops->to_host(fx);
    Values sum(static_cast<size_t>(n), 0.0);
    for (int r = 0; r < tp; ++r) {
      const Values xr = regenerable_values(n, 3, world_rank_of(t, r, t.sp_rank, t.dp_rank));
      for (size_t i = 0; i < sum.size(); ++i) sum[i] += xr[i];
    }
    expect_near(forward, sum, 1e-14, "reduce_from_tp_forward");
    EXPECT_EQ(traffic().tensor - before, ring_allreduce_bytes(n * kF64, tp));

    Tensor by = tensor_of(*ops, shape, y);
    reduce_from_tp_backward(t, by);
    const Values back = ops->to_host(by);
    EXPECT_EQ(back, y);
    EXPECT_EQ(traffic().tensor - before, ring_allreduce_bytes(n * kF64, tp));

    // f(x) and y replicated: one product; x and f*(y) = (y, ..., y) per rank: summed over tp.
    expect_same_sum(dot(forward, y), t.tp->allreduce_sum(dot(x, back)), "adjoint");
  }
}

TEST(SplitColumnsToTp, EachRankReadsItsColumnsBackwardAssemblesThem) {
  auto ops = make_cpu_ops();
  const int64_t rows = 3, local_cols = 2;
  for (const Topology& t : every_layout()) {
    SCOPED_TRACE(name_of(t));
    const int tp = t.layout.tp;
    const int64_t cols = local_cols * tp, n = rows * cols;
    const Shape full{rows, cols};
    // Rank r's columns: [r * local_cols, (r + 1) * local_cols) of every row.
    auto columns_of = [&](const Values& v, int r) {
      Values out;
      for (int64_t i = 0; i < rows; ++i)
        for (int64_t j = 0; j < local_cols; ++j)
          out.push_back(v[static_cast<size_t>(i * cols + r * local_cols + j)]);
      return out;
    };
    const Values x = regenerable_values(n, 5, tp_group_of(t));  // replicated over tp
    const Values x_mine = columns_of(x, t.tp_rank);             // f(x) on this rank
    const int64_t before = traffic().tensor;

    // The forward moves nothing: the kernels index the columns, the tensor stays whole.
    Tensor fx = tensor_of(*ops, full, x);
    split_columns_to_tp_forward(t, fx);
    EXPECT_EQ(ops->to_host(fx), x);
    EXPECT_EQ(traffic().tensor, before);

    // The backward's input: this rank's gradient y in its own columns, zero elsewhere.
    auto y_of = [&](int r) {
      return regenerable_values(rows * local_cols, 6, world_rank_of(t, r, t.sp_rank, t.dp_rank));
    };
    Values padded(static_cast<size_t>(n), 0.0), assembled(static_cast<size_t>(n), 0.0);
    for (int r = 0; r < tp; ++r) {
      const Values yr = y_of(r);
      for (int64_t i = 0; i < rows; ++i)
        for (int64_t j = 0; j < local_cols; ++j) {
          const auto at = static_cast<size_t>(i * cols + r * local_cols + j);
          assembled[at] = yr[static_cast<size_t>(i * local_cols + j)];
          if (r == t.tp_rank) padded[at] = assembled[at];
        }
    }
    Tensor by = tensor_of(*ops, full, padded);
    split_columns_to_tp_backward(t, by);
    const Values back = ops->to_host(by);
    // Adding zeros is exact: every rank holds the assembled gradient bit for bit.
    EXPECT_EQ(back, assembled);
    EXPECT_EQ(traffic().tensor - before, ring_allreduce_bytes(n * kF64, tp));

    // f(x) is distributed (a column block per rank): summed over tp; x, f*(y) replicated.
    expect_same_sum(t.tp->allreduce_sum(dot(x_mine, y_of(t.tp_rank))), dot(x, back), "adjoint");
  }
}

// ---- halo_exchange (parallel/halo_exchange.h) ----------------------------------------------

constexpr int64_t kBatch = 2, kWindow = 3, kHaloWidth = 4;
const Shape kHaloShape{kBatch, kWindow, kHaloWidth};

TEST(HaloExchange, ForwardShiftsTheRingBackwardIsItsAdjoint) {
  auto ops = make_cpu_ops();
  const int64_t n = numel_of(kHaloShape), bytes = 2 * n * kF64;  // keys and values
  for (const Topology& t : every_layout()) {
    SCOPED_TRACE(name_of(t));
    const int sp = t.layout.sp;
    auto peer = [&](int s) { return world_rank_of(t, t.tp_rank, (s + sp) % sp, t.dp_rank); };
    const int prev = peer(t.sp_rank - 1), next = peer(t.sp_rank + 1);
    const Values tail_k = regenerable_values(n, 20, t.world_rank);
    const Values tail_v = regenerable_values(n, 21, t.world_rank);
    const Values dhalo_k = regenerable_values(n, 22, t.world_rank);
    const Values dhalo_v = regenerable_values(n, 23, t.world_rank);
    const int64_t before = traffic().halo;

    Tensor halo_k = ops->empty(kHaloShape, DType::f64), halo_v = ops->empty(kHaloShape, DType::f64);
    halo_exchange_forward(*ops, t, tensor_of(*ops, kHaloShape, tail_k),
                          tensor_of(*ops, kHaloShape, tail_v), halo_k, halo_v, 1);
    const Values got_k = ops->to_host(halo_k), got_v = ops->to_host(halo_v);
    // Rank s's halo is rank s-1's tail; rank 0's is rank sp-1's (the ring).
    EXPECT_EQ(got_k, regenerable_values(n, 20, prev));
    EXPECT_EQ(got_v, regenerable_values(n, 21, prev));
    EXPECT_EQ(traffic().halo - before, sp > 1 ? bytes : 0);

    Tensor dtail_k = ops->empty(kHaloShape, DType::f64);
    Tensor dtail_v = ops->empty(kHaloShape, DType::f64);
    halo_exchange_backward(*ops, t, tensor_of(*ops, kHaloShape, dhalo_k),
                           tensor_of(*ops, kHaloShape, dhalo_v), dtail_k, dtail_v, 2);
    const Values back_k = ops->to_host(dtail_k), back_v = ops->to_host(dtail_v);
    // Rank s's tail fed rank s+1's halo: its gradient comes from there.
    EXPECT_EQ(back_k, regenerable_values(n, 22, next));
    EXPECT_EQ(back_v, regenerable_values(n, 23, next));
    EXPECT_EQ(traffic().halo - before, sp > 1 ? 2 * bytes : 0);

    // Tails, halos and their gradients are all distributed: both sides sum over sp.
    expect_same_sum(t.sp->allreduce_sum(dot(got_k, dhalo_k) + dot(got_v, dhalo_v)),
                    t.sp->allreduce_sum(dot(tail_k, back_k) + dot(tail_v, back_v)), "adjoint");
  }
}

// Zigzag (parallel/sequence_layout.h): rank s holds slices s and 2sp-1-s, each with its own
// halo: slice g's is slice g-1's tail, slice 0's the last slice's entry (the cache tail, on
// rank 0 itself); the backward returns each halo's gradient to that tail.
TEST(HaloExchange, ZigzagGivesEverySliceItsPredecessorsTail) {
  auto ops = make_cpu_ops();
  const int64_t n = numel_of(kHaloShape);
  for (Topology t : every_layout()) {
    t.layout.sp_order = SpOrder::zigzag;
    SCOPED_TRACE(name_of(t) + " zigzag");
    const int sp = t.layout.sp, S = 2 * sp;
    const SequenceLayout layout(SpOrder::zigzag, sp, S);
    // Values named by (what, slice) for this sp group (dp and tp groups differ by world rank).
    auto who = [&](int slice) {
      return static_cast<uint64_t>(1000 * (t.world_rank - t.sp_rank * t.layout.tp) + slice);
    };
    std::vector<Tensor> tail_k, tail_v, halo_k, halo_v, dhalo_k, dhalo_v, dtail_k, dtail_v;
    const std::vector<int> mine = layout.slices_of(t.sp_rank);
    for (int g : mine) {
      tail_k.push_back(tensor_of(*ops, kHaloShape, regenerable_values(n, 30, who(g))));
      tail_v.push_back(tensor_of(*ops, kHaloShape, regenerable_values(n, 31, who(g))));
      dhalo_k.push_back(tensor_of(*ops, kHaloShape, regenerable_values(n, 32, who(g))));
      dhalo_v.push_back(tensor_of(*ops, kHaloShape, regenerable_values(n, 33, who(g))));
      for (auto* v : {&halo_k, &halo_v, &dtail_k, &dtail_v})
        v->push_back(ops->empty(kHaloShape, DType::f64));
    }
    halo_exchange_start(*ops, t, tail_k, tail_v, halo_k, halo_v, 5, true).wait();
    halo_exchange_start(*ops, t, dhalo_k, dhalo_v, dtail_k, dtail_v, 6, false).wait();
    for (size_t k = 0; k < mine.size(); ++k) {
      const int g = mine[k], pred = (g + S - 1) % S, succ = (g + 1) % S;
      EXPECT_EQ(ops->to_host(halo_k[k]), regenerable_values(n, 30, who(pred))) << "slice " << g;
      EXPECT_EQ(ops->to_host(halo_v[k]), regenerable_values(n, 31, who(pred))) << "slice " << g;
      EXPECT_EQ(ops->to_host(dtail_k[k]), regenerable_values(n, 32, who(succ))) << "slice " << g;
      EXPECT_EQ(ops->to_host(dtail_v[k]), regenerable_values(n, 33, who(succ))) << "slice " << g;
    }
  }
}

TEST(HaloExchange, StartAndWaitMatchBlocking) {
  auto ops = make_cpu_ops();
  const int64_t n = numel_of(kHaloShape);
  for (const Topology& t : every_layout()) {
    SCOPED_TRACE(name_of(t));
    const Tensor tail_k = tensor_of(*ops, kHaloShape, regenerable_values(n, 24, t.world_rank));
    const Tensor tail_v = tensor_of(*ops, kHaloShape, regenerable_values(n, 25, t.world_rank));
    const Tensor dhalo_k = tensor_of(*ops, kHaloShape, regenerable_values(n, 26, t.world_rank));
    const Tensor dhalo_v = tensor_of(*ops, kHaloShape, regenerable_values(n, 27, t.world_rank));
    auto empty = [&] { return ops->empty(kHaloShape, DType::f64); };

    Tensor halo_k = empty(), halo_v = empty(), dtail_k = empty(), dtail_v = empty();
    halo_exchange_forward(*ops, t, tail_k, tail_v, halo_k, halo_v, 1);
    halo_exchange_backward(*ops, t, dhalo_k, dhalo_v, dtail_k, dtail_v, 2);

    // A forward and a backward exchange in flight together (opposite directions of the ring;
    // with sp = 2 the same peer), told apart by their tags.
    Tensor s_halo_k = empty(), s_halo_v = empty(), s_dtail_k = empty(), s_dtail_v = empty();
    HaloExchange f = halo_exchange_forward_start(*ops, t, tail_k, tail_v, s_halo_k, s_halo_v, 3);
    HaloExchange b =
        halo_exchange_backward_start(*ops, t, dhalo_k, dhalo_v, s_dtail_k, s_dtail_v, 4);
    b.wait();
    f.wait();
    EXPECT_EQ(ops->to_host(s_halo_k), ops->to_host(halo_k));
    EXPECT_EQ(ops->to_host(s_halo_v), ops->to_host(halo_v));
    EXPECT_EQ(ops->to_host(s_dtail_k), ops->to_host(dtail_k));
    EXPECT_EQ(ops->to_host(s_dtail_v), ops->to_host(dtail_v));
  }
}

// ---- tp_layernorm (parallel/tp_layernorm.h) ------------------------------------------------

constexpr int64_t kRows = 5, kFeatures = 12;  // 12 splits over tp = 1, 2, 4
constexpr double kEps = 1e-5;

// One row-major [kRows, kFeatures] problem, replicated over tp; each rank takes its columns.
struct LayerNormCase {
  Values x, gamma, beta;

  explicit LayerNormCase(int group)
      : x(regenerable_values(kRows * kFeatures, 30, static_cast<uint64_t>(group))),
        gamma(regenerable_values(kFeatures, 31, static_cast<uint64_t>(group))),
        beta(regenerable_values(kFeatures, 32, static_cast<uint64_t>(group))) {
    // Rows off centre and gamma away from zero, so a wrong mean or scale shows.
    for (int64_t i = 0; i < kRows; ++i)
      for (int64_t j = 0; j < kFeatures; ++j) x[static_cast<size_t>(i * kFeatures + j)] += 0.5 * i;
    for (double& g : gamma) g += 1.5;
  }
};

// Columns [first, first + count) of a row-major matrix with `cols` columns.
Values columns(const Values& m, int64_t cols, int64_t first, int64_t count) {
  Values out;
  for (size_t i = 0; i < m.size() / static_cast<size_t>(cols); ++i)
    for (int64_t j = first; j < first + count; ++j)
      out.push_back(m[i * static_cast<size_t>(cols) + static_cast<size_t>(j)]);
  return out;
}

// The single-process LayerNorm over whole rows: out, mean, rstd, and the backward for a dout.
struct PlainLayerNorm {
  Values out, mean, rstd, dx, dgamma, dbeta;

  PlainLayerNorm(const LayerNormCase& c, const Values& dout)
      : out(c.x.size()),
        mean(kRows),
        rstd(kRows),
        dx(c.x.size()),
        dgamma(kFeatures, 0.0),
        dbeta(kFeatures, 0.0) {
    const double n = kFeatures;
    for (int64_t i = 0; i < kRows; ++i) {
      auto at = [&](int64_t j) { return static_cast<size_t>(i * kFeatures + j); };
      const auto row = static_cast<size_t>(i);
      double sum = 0, sq = 0;
      for (int64_t j = 0; j < kFeatures; ++j) sum += c.x[at(j)];
      mean[row] = sum / n;
      for (int64_t j = 0; j < kFeatures; ++j)
        sq += (c.x[at(j)] - mean[row]) * (c.x[at(j)] - mean[row]);
      rstd[row] = 1.0 / std::sqrt(sq / n + kEps);
      double sum_g = 0, sum_gx = 0;
      Values xhat(kFeatures), g(kFeatures);
      for (int64_t j = 0; j < kFeatures; ++j) {
        const auto f = static_cast<size_t>(j);
        xhat[f] = (c.x[at(j)] - mean[row]) * rstd[row];
        out[at(j)] = xhat[f] * c.gamma[f] + c.beta[f];
        g[f] = dout[at(j)] * c.gamma[f];
        sum_g += g[f];
        sum_gx += g[f] * xhat[f];
        dgamma[f] += dout[at(j)] * xhat[f];
        dbeta[f] += dout[at(j)];
      }
      for (int64_t j = 0; j < kFeatures; ++j) {
        const auto f = static_cast<size_t>(j);
        dx[at(j)] = rstd[row] * (g[f] - sum_g / n - xhat[f] * sum_gx / n);
      }
    }
  }
};

// This rank's share of a tp_layernorm problem: its columns, as tensors.
struct LocalLayerNorm {
  int64_t first, count;
  Tensor gamma, beta;

  LocalLayerNorm(Ops& ops, const Topology& t, const LayerNormCase& c)
      : first(t.tp_rank * kFeatures / t.layout.tp), count(kFeatures / t.layout.tp) {
    gamma = tensor_of(ops, {count}, columns(c.gamma, kFeatures, first, count));
    beta = tensor_of(ops, {count}, columns(c.beta, kFeatures, first, count));
  }
  Tensor mine(Ops& ops, const Values& full) const {
    return tensor_of(ops, {kRows, count}, columns(full, kFeatures, first, count));
  }
  Values forward(Ops& ops, const Topology& t, const Values& x_full, LayerNormStats& stats) const {
    Tensor out;
    tp_layernorm_forward(ops, t, mine(ops, x_full), gamma, beta, kFeatures, kEps, out, stats);
    return ops.to_host(out);
  }
};

TEST(TpLayerNorm, ForwardAndBackwardMatchTheWholeRowLayerNorm) {
  auto ops = make_cpu_ops();
  for (const Topology& t : every_layout()) {
    SCOPED_TRACE(name_of(t));
    const int tp = t.layout.tp;
    const LayerNormCase c(tp_group_of(t));
    const Values dout = regenerable_values(kRows * kFeatures, 33, tp_group_of(t));
    const PlainLayerNorm plain(c, dout);
    const LocalLayerNorm ln(*ops, t, c);
    const int64_t before = traffic().tensor;

    LayerNormStats stats;
    const Values out = ln.forward(*ops, t, c.x, stats);
    expect_near(out, columns(plain.out, kFeatures, ln.first, ln.count), 1e-13, "out");
    expect_near(ops->to_host(stats.mean), plain.mean, 1e-14, "mean");
    expect_near(ops->to_host(stats.rstd), plain.rstd, 1e-12, "rstd");
    // Two statistics per row, one all-reduce each (none with tp = 1: the fused LayerNorm).
    const int64_t stat_bytes = ring_allreduce_bytes(kRows * kF64, tp);
    EXPECT_EQ(traffic().tensor - before, 2 * stat_bytes);

    // The gradients accumulate onto what they hold.
    const Values dx0 = regenerable_values(kRows * ln.count, 34, t.world_rank);
    const Values dgamma0 = regenerable_values(ln.count, 35, t.world_rank);
    const Values dbeta0 = regenerable_values(ln.count, 36, t.world_rank);
    Tensor dx = tensor_of(*ops, {kRows, ln.count}, dx0);
    Tensor dgamma = tensor_of(*ops, {ln.count}, dgamma0);
    Tensor dbeta = tensor_of(*ops, {ln.count}, dbeta0);
    const Tensor x = ln.mine(*ops, c.x);
    tp_layernorm_backward(*ops, t, ln.mine(*ops, dout), x, ln.gamma, stats, kFeatures, dx, dgamma,
                          dbeta);
    auto plus = [](Values a, const Values& b) {
      for (size_t i = 0; i < a.size() && i < b.size(); ++i) a[i] += b[i];
      return a;
    };
    expect_near(ops->to_host(dx), plus(dx0, columns(plain.dx, kFeatures, ln.first, ln.count)),
                1e-12, "dx");
    expect_near(ops->to_host(dgamma),
                plus(dgamma0, columns(plain.dgamma, kFeatures, ln.first, ln.count)), 1e-13,
                "dgamma");
    expect_near(ops->to_host(dbeta),
                plus(dbeta0, columns(plain.dbeta, kFeatures, ln.first, ln.count)), 1e-13, "dbeta");
    // The backward's two row sums travel in one all-reduce.
    EXPECT_EQ(traffic().tensor - before,
              2 * stat_bytes + ring_allreduce_bytes(2 * kRows * kF64, tp));

    // Without dx (a constant input), the parameters' gradients alone.
    Tensor no_dx, dgamma_only = ops->zeros({ln.count}, DType::f64);
    Tensor dbeta_only = ops->zeros({ln.count}, DType::f64);
    tp_layernorm_backward(*ops, t, ln.mine(*ops, dout), x, ln.gamma, stats, kFeatures, no_dx,
                          dgamma_only, dbeta_only);
    expect_near(ops->to_host(dgamma_only), columns(plain.dgamma, kFeatures, ln.first, ln.count),
                1e-13, "dgamma without dx");
    expect_near(ops->to_host(dbeta_only), columns(plain.dbeta, kFeatures, ln.first, ln.count),
                1e-13, "dbeta without dx");
  }
}

// The backward is the Jacobian transpose of the distributed forward itself: <J v, dy> by a
// central difference of tp_layernorm_forward against <v, J^T dy> from tp_layernorm_backward,
// both summed over tp (every tensor here is split by columns).
TEST(TpLayerNorm, BackwardIsTheJacobianTranspose) {
  auto ops = make_cpu_ops();
  const double h = 1e-5;
  for (const Topology& t : every_layout()) {
    SCOPED_TRACE(name_of(t));
    const LayerNormCase c(tp_group_of(t));
    const LocalLayerNorm ln(*ops, t, c);
    const Values v = regenerable_values(kRows * kFeatures, 37, tp_group_of(t));
    const Values dy = regenerable_values(kRows * kFeatures, 38, tp_group_of(t));
    Values x_plus = c.x, x_minus = c.x;
    for (size_t i = 0; i < v.size(); ++i) x_plus[i] += h * v[i], x_minus[i] -= h * v[i];
    LayerNormStats stats, unused;
    ln.forward(*ops, t, c.x, stats);
    const Values f_plus = ln.forward(*ops, t, x_plus, unused);
    const Values f_minus = ln.forward(*ops, t, x_minus, unused);
    Values jv(f_plus.size());
    for (size_t i = 0; i < jv.size(); ++i) jv[i] = (f_plus[i] - f_minus[i]) / (2 * h);

    Tensor dx = ops->zeros({kRows, ln.count}, DType::f64);
    Tensor dgamma = ops->zeros({ln.count}, DType::f64), dbeta = ops->zeros({ln.count}, DType::f64);
    tp_layernorm_backward(*ops, t, ln.mine(*ops, dy), ln.mine(*ops, c.x), ln.gamma, stats,
                          kFeatures, dx, dgamma, dbeta);
    const Values dy_mine = columns(dy, kFeatures, ln.first, ln.count);
    const Values v_mine = columns(v, kFeatures, ln.first, ln.count);
    const double lhs = t.tp->allreduce_sum(dot(jv, dy_mine));
    const double rhs = t.tp->allreduce_sum(dot(v_mine, ops->to_host(dx)));
    // Central difference: O(h^2) truncation plus rounding / h, about 1e-10 here.
    EXPECT_NEAR(lhs, rhs, 1e-8 * std::max(1.0, std::abs(rhs)));
  }
}

// ---- gradient reduction (training/gradient_reduction.h) ------------------------------------

// A replicated [3, 4] parameter and a tp-sharded one, [2 tp, 3] whole, two rows per rank.
struct TwoParameters {
  Parameter replicated, sharded;

  TwoParameters(Ops& ops, const Topology& t) {
    replicated.allocate(ops, "replicated", {3, 4}, {}, DType::f64);
    sharded.allocate(ops, "sharded", {2, 3}, {2 * t.layout.tp, 3}, DType::f64);
    sharded.shard_along(0, 2 * t.tp_rank, 2);
  }
  std::vector<Parameter*> list() { return {&replicated, &sharded}; }
};

TEST(ReduceGradients, SumsOverDpAndSpNotTp) {
  auto ops = make_cpu_ops();
  for (const Topology& t : every_layout()) {
    SCOPED_TRACE(name_of(t));
    TwoParameters p(*ops, t);
    const int64_t na = p.replicated.grad.numel(), nb = p.sharded.grad.numel();
    ops->from_host(p.replicated.grad, regenerable_values(na, 40, t.world_rank));
    ops->from_host(p.sharded.grad, regenerable_values(nb, 41, t.world_rank));
    const int64_t before = traffic().gradients;
    reduce_gradients(*ops, t, p.list());

    // The ranks holding the same shard: this tp rank at every (sp, dp) position.
    Values sum_a(static_cast<size_t>(na), 0.0), sum_b(static_cast<size_t>(nb), 0.0);
    for (int d = 0; d < t.layout.dp; ++d)
      for (int s = 0; s < t.layout.sp; ++s) {
        const int w = world_rank_of(t, t.tp_rank, s, d);
        const Values a = regenerable_values(na, 40, w), b = regenerable_values(nb, 41, w);
        for (size_t i = 0; i < sum_a.size(); ++i) sum_a[i] += a[i];
        for (size_t i = 0; i < sum_b.size(); ++i) sum_b[i] += b[i];
      }
    expect_near(ops->to_host(p.replicated.grad), sum_a, 1e-14, "replicated gradient");
    expect_near(ops->to_host(p.sharded.grad), sum_b, 1e-14, "sharded gradient");
    EXPECT_EQ(traffic().gradients - before,
              ring_allreduce_bytes((na + nb) * kF64, t.layout.sp * t.layout.dp));
  }
}

// After reduce_gradients, the norm of the whole model's gradient: a tp-sharded parameter's
// whole gradient is its shards side by side, a replicated one is the same on every tp rank and
// counts once.
TEST(GlobalGradientNorm, CountsEachShardOnce) {
  auto ops = make_cpu_ops();
  for (const Topology& t : every_layout()) {
    SCOPED_TRACE(name_of(t));
    const int tp = t.layout.tp;
    TwoParameters p(*ops, t);
    const int64_t na = p.replicated.grad.numel(), nb = p.sharded.grad.numel();
    // Replicated parameters see replicated activations: their per-rank gradients agree over tp.
    auto replicated_grad = [&](int s, int d) {
      return regenerable_values(na, 42, static_cast<uint64_t>(s + t.layout.sp * d));
    };
    auto sharded_grad = [&](int r, int s, int d) {
      return regenerable_values(nb, 43, world_rank_of(t, r, s, d));
    };
    ops->from_host(p.replicated.grad, replicated_grad(t.sp_rank, t.dp_rank));
    ops->from_host(p.sharded.grad, sharded_grad(t.tp_rank, t.sp_rank, t.dp_rank));
    reduce_gradients(*ops, t, p.list());
    const double norm = global_gradient_norm(*ops, t, p.list());

    // The whole gradient: replicated summed over (sp, dp); each tp shard summed over (sp, dp).
    Values whole_a(static_cast<size_t>(na), 0.0), whole_b(static_cast<size_t>(tp * nb), 0.0);
    for (int d = 0; d < t.layout.dp; ++d)
      for (int s = 0; s < t.layout.sp; ++s) {
        const Values a = replicated_grad(s, d);
        for (size_t i = 0; i < whole_a.size(); ++i) whole_a[i] += a[i];
        for (int r = 0; r < tp; ++r) {
          const Values b = sharded_grad(r, s, d);
          for (size_t i = 0; i < b.size(); ++i) whole_b[static_cast<size_t>(r * nb) + i] += b[i];
        }
      }
    const double expected = std::sqrt(dot(whole_a, whole_a) + dot(whole_b, whole_b));
    EXPECT_NEAR(norm, expected, 1e-13 * expected);
  }
}

}  // namespace
}  // namespace tls
