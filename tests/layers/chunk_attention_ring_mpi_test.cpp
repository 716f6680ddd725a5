// mpi-ranks: 1 2 4
// The compressed attention with the slots travelling round the sp ring
// (layers/chunk_attention_ring.h) against chunk_attention over every rank's slots gathered in
// global order, computed by each rank for itself from values any rank can regenerate: forward
// (out, lse) and backward (dq, dpos, and each owner's slot gradients summed over every rank's
// queries), on every (tp, sp) layout of the world, float64 and float32, with a positional table
// short enough that relative ids are clamped and one that holds every id. The ring reads only the
// rows each call spans (table_positions), the reference the whole table.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "kernels/ops.h"
#include "layers/chunk_attention_ring.h"
#include "parallel/mpi_comm.h"
#include "support/mpi_layouts.h"

namespace tls {
namespace {

using testing::every_layout;
using testing::regenerable_values;

using Values = std::vector<double>;

struct Geometry {
  int64_t batch = 2, heads = 2, d_head = 4, chunk = 2, rank = 2;
  int64_t tokens = 8;  // per sp rank; the cache slice is as long (M = T)
  int64_t n_pos = 7;   // fewer rows than the largest relative id: ids are clamped
  int sp = 1;
  int64_t dl() const { return heads * d_head; }
  int64_t cache_slots() const { return tokens / chunk * rank; }
  int64_t block_slots() const { return tokens / chunk * rank; }
  int64_t own_slots() const { return cache_slots() + block_slots(); }
  AttentionShape shape(int owner) const {
    AttentionShape s;
    s.batch = batch;
    s.tokens = tokens;
    s.n_head = heads;
    s.d_head = d_head;
    s.window = tokens;
    s.chunk_size = chunk;
    s.chunk_rank = rank;
    s.first_query_chunk = sp * tokens / chunk + owner * tokens / chunk;
    return s;
  }
};

// Per owner: its queries, output gradient and slots (cache part then block part).
Values queries(const Geometry& g, int owner) {
  return regenerable_values(g.batch * g.tokens * g.dl(), 1, owner);
}
Values out_grad(const Geometry& g, int owner) {
  return regenerable_values(g.batch * g.tokens * g.dl(), 2, owner);
}
Values own_slots(const Geometry& g, int owner, uint64_t which) {
  return regenerable_values(g.batch * g.own_slots() * g.dl(), 3 + which, owner);
}

Tensor tensor_of(Ops& ops, std::vector<int64_t> shape, const Values& v, DType dt) {
  Tensor t = ops.empty(shape, dt);
  ops.from_host(t, v);
  return t;
}

// Owner o's slot j in the global order [cache parts of 0..sp-1 ; block parts of 0..sp-1].
int64_t global_slot(const Geometry& g, int owner, int64_t j) {
  return j < g.cache_slots()
             ? owner * g.cache_slots() + j
             : g.sp * g.cache_slots() + owner * g.block_slots() + (j - g.cache_slots());
}

// Copies owner's rows between its own [B, own_slots, dl] and the gathered [B, sp own_slots, dl].
void copy_owner_rows(const Geometry& g, int owner, Values& own, Values& all, bool to_all) {
  const int64_t S = g.own_slots() * g.sp, dl = g.dl();
  for (int64_t b = 0; b < g.batch; ++b)
    for (int64_t j = 0; j < g.own_slots(); ++j) {
      double* o = &own[static_cast<size_t>((b * g.own_slots() + j) * dl)];
      double* a = &all[static_cast<size_t>((b * S + global_slot(g, owner, j)) * dl)];
      if (to_all)
        std::copy_n(o, dl, a);
      else
        std::copy_n(a, dl, o);
    }
}

// Every owner's slots, gathered.
Values gathered(const Geometry& g, uint64_t which) {
  Values all(static_cast<size_t>(g.batch * g.own_slots() * g.sp * g.dl()));
  for (int o = 0; o < g.sp; ++o) {
    Values own = own_slots(g, o, which);
    copy_owner_rows(g, o, own, all, true);
  }
  return all;
}

// This owner's rows of a gradient over the gathered slots.
Values own_rows(const Geometry& g, Values all, int owner) {
  Values own(static_cast<size_t>(g.batch * g.own_slots() * g.dl()));
  copy_owner_rows(g, owner, own, all, false);
  return own;
}

void expect_close(const Values& got, const Values& want, double tol, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double scale = 1;
  for (double w : want)
    if (std::isfinite(w)) scale = std::max(scale, std::abs(w));
  for (size_t i = 0; i < got.size(); ++i) {
    if (std::isinf(want[i]) && got[i] == want[i]) continue;
    if (!(std::abs(got[i] - want[i]) <= tol * scale)) {
      ADD_FAILURE() << what << "[" << i << "] = " << got[i] << ", expected " << want[i];
      return;
    }
  }
}

class ChunkAttentionRing : public ::testing::TestWithParam<DType> {};

TEST_P(ChunkAttentionRing, EqualsTheAttentionOverTheGatheredSlots) {
  const DType dt = GetParam();
  const double tol = dt == DType::f64 ? 1e-12 : 2e-5;
  auto ops = make_cpu_ops();
  // Positional tables short enough that ids are clamped, and as long as the largest id.
  for (const Topology& topo : every_layout())
    for (const bool clamped : {true, false}) {
      Geometry g;
      g.sp = topo.layout.sp;
      if (!clamped) g.n_pos = 2 * g.sp * g.tokens / g.chunk * g.rank;
      SCOPED_TRACE("tp " + std::to_string(topo.layout.tp) + " sp " + std::to_string(g.sp) +
                   ", world rank " + std::to_string(topo.world_rank) + ", n_pos " +
                   std::to_string(g.n_pos));
      const int me = topo.sp_rank;
      const int64_t T = g.tokens, dl = g.dl(), S = g.own_slots() * g.sp;
      const SlotLayout layout{g.cache_slots(), g.block_slots()};
      const Tensor pos = tensor_of(*ops, {g.n_pos, dl}, regenerable_values(g.n_pos * dl, 9, 0), dt);
      const Tensor khat_all = tensor_of(*ops, {g.batch, S, dl}, gathered(g, 0), dt);
      const Tensor vhat_all = tensor_of(*ops, {g.batch, S, dl}, gathered(g, 1), dt);

      // The reference for every owner's queries: forward, then the backward summed over owners.
      Tensor dkhat_all = ops->zeros({g.batch, S, dl}, dt),
             dvhat_all = ops->zeros({g.batch, S, dl}, dt);
      Values out_ref, lse_ref, dq_ref, dpos_ref;
      Tensor my_lse, my_delta;
      for (int o = 0; o < g.sp; ++o) {
        const AttentionShape s = g.shape(o);
        const Tensor q = tensor_of(*ops, {g.batch, T, dl}, queries(g, o), dt);
        const Tensor dout = tensor_of(*ops, {g.batch, T, dl}, out_grad(g, o), dt);
        Tensor out = ops->empty({g.batch, T, dl}, dt), lse = ops->empty({g.batch, g.heads, T}, dt);
        ops->chunk_attention_forward(out, lse, q, khat_all, vhat_all, pos, s);
        Tensor delta = ops->empty({g.batch, g.heads, T}, dt);
        ops->attention_delta(delta, dout, out, s);
        Tensor dq = ops->zeros(q.shape(), dt), dpos = ops->zeros(pos.shape(), dt);
        ops->chunk_attention_backward(dq, dkhat_all, dvhat_all, dpos, dout, lse, delta, q, khat_all,
                                      vhat_all, pos, s);
        if (o == me) {
          out_ref = ops->to_host(out);
          lse_ref = ops->to_host(lse);
          dq_ref = ops->to_host(dq);
          dpos_ref = ops->to_host(dpos);
          my_lse = lse;
          my_delta = delta;
        }
      }

      const AttentionShape s = g.shape(me);
      const Tensor q = tensor_of(*ops, {g.batch, T, dl}, queries(g, me), dt);
      const Tensor dout = tensor_of(*ops, {g.batch, T, dl}, out_grad(g, me), dt);
      const Tensor khat = tensor_of(*ops, {g.batch, g.own_slots(), dl}, own_slots(g, me, 0), dt);
      const Tensor vhat = tensor_of(*ops, {g.batch, g.own_slots(), dl}, own_slots(g, me, 1), dt);
      Tensor out = ops->empty({g.batch, T, dl}, dt), lse = ops->empty({g.batch, g.heads, T}, dt);
      chunk_attention_ring_forward(*ops, topo, out, lse, q, khat, vhat,
                                   table_positions(pos, nullptr), s, layout, 2);
      expect_close(ops->to_host(out), out_ref, tol, "out");
      expect_close(ops->to_host(lse), lse_ref, tol, "lse");

      Tensor dq = ops->zeros(q.shape(), dt), dpos = ops->zeros(pos.shape(), dt);
      Tensor dkhat = ops->zeros(khat.shape(), dt), dvhat = ops->zeros(vhat.shape(), dt);
      chunk_attention_ring_backward(*ops, topo, dq, dkhat, dvhat, dout, my_lse, my_delta, q, khat,
                                    vhat, table_positions(pos, &dpos), s, layout, 3);
      expect_close(ops->to_host(dq), dq_ref, tol, "dq");
      expect_close(ops->to_host(dpos), dpos_ref, tol, "dpos");
      expect_close(ops->to_host(dkhat), own_rows(g, ops->to_host(dkhat_all), me), tol, "dkhat");
      expect_close(ops->to_host(dvhat), own_rows(g, ops->to_host(dvhat_all), me), tol, "dvhat");
    }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, ChunkAttentionRing, ::testing::Values(DType::f64, DType::f32),
                         [](const auto& info) {
                           return std::string(info.param == DType::f64 ? "float64" : "float32");
                         });

}  // namespace
}  // namespace tls
