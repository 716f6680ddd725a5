// mpi-ranks: 2 4
// The MPI Comm and the Topology grid: rank arithmetic (tp fastest, then sp, then dp), every
// collective against its definition, and the point-to-point ring used by the halo exchange.
#include <gtest/gtest.h>

#include "kernels/error.h"
#include "kernels/ops.h"
#include "parallel/mpi_comm.h"

namespace tls {
namespace {

TEST(Topology, RanksFollowTpThenSpThenDp) {
  int world = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  const int tp = world >= 2 ? 2 : 1, sp = world >= 4 ? 2 : 1;
  Topology t = make_mpi_topology(tp, sp);
  EXPECT_EQ(t.layout.world(), world);
  EXPECT_EQ(t.tp_rank, t.world_rank % tp);
  EXPECT_EQ(t.sp_rank, (t.world_rank / tp) % sp);
  EXPECT_EQ(t.tp->size(), tp);
  EXPECT_EQ(t.sp->size(), sp);
  EXPECT_EQ(t.dp->size(), world / (tp * sp));
  EXPECT_EQ(t.dp_sp->size(), world / tp);
  EXPECT_EQ(t.tp->rank(), t.tp_rank);
  EXPECT_EQ(t.sp->rank(), t.sp_rank);
}

TEST(Topology, RefusesAWorldThatDoesNotDivide) {
  int world = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  try {
    make_mpi_topology(world + 1, 1);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--tp"), std::string::npos) << e.what();
  }
}

TEST(MpiComm, CollectivesMatchTheirDefinitions) {
  auto ops = make_cpu_ops();
  Topology t = make_mpi_topology(1, 1);
  Comm& c = *t.world;
  const int n = c.size(), r = c.rank();
  Tensor x = ops->empty({3}, DType::f64);
  ops->from_host(x, {1.0 * r, 2.0, -1.0 * r * r});
  c.allreduce_sum(x);
  double s1 = 0, s3 = 0;
  for (int i = 0; i < n; ++i) s1 += i, s3 -= i * i;
  EXPECT_EQ(ops->to_host(x), (std::vector<double>{s1, 2.0 * n, s3}));
  EXPECT_DOUBLE_EQ(c.allreduce_max(static_cast<double>(r)), n - 1);

  Tensor mine = ops->empty({2}, DType::f32), all = ops->empty({2 * n}, DType::f32);
  ops->from_host(mine, {1.0 * r, 10.0 * r});
  c.allgather(all, mine);
  std::vector<double> got = ops->to_host(all);
  for (int i = 0; i < n; ++i) {
    EXPECT_EQ(got[2 * i], i);
    EXPECT_EQ(got[2 * i + 1], 10 * i);
  }
  Tensor contrib = ops->empty({2 * n}, DType::f64), block = ops->empty({2}, DType::f64);
  std::vector<double> v(static_cast<size_t>(2 * n));
  for (int i = 0; i < 2 * n; ++i) v[static_cast<size_t>(i)] = i + r;
  ops->from_host(contrib, v);
  c.reduce_scatter_sum(block, contrib);
  std::vector<double> b = ops->to_host(block);
  EXPECT_DOUBLE_EQ(b[0], n * (2 * r) + s1);
  EXPECT_DOUBLE_EQ(b[1], n * (2 * r + 1) + s1);
}

TEST(MpiComm, RingSendReceive) {
  auto ops = make_cpu_ops();
  Topology t = make_mpi_topology(1, 1);
  Comm& c = *t.world;
  const int n = c.size(), r = c.rank();
  Tensor out = ops->empty({4}, DType::f64), in = ops->empty({4}, DType::f64);
  ops->from_host(out, {1.0 * r, 2.0 * r, 3.0 * r, 4.0 * r});
  auto recv = c.irecv(in, (r + n - 1) % n, 7);
  auto send = c.isend(out, (r + 1) % n, 7);
  recv->wait();
  send->wait();
  const double p = (r + n - 1) % n;
  EXPECT_EQ(ops->to_host(in), (std::vector<double>{p, 2 * p, 3 * p, 4 * p}));
}

}  // namespace
}  // namespace tls
