// MpiComm: the Comm over MPI for host tensors (float32, float64, int32).
#pragma once

#include <mpi.h>

#include "parallel/comm.h"
#include "parallel/topology.h"

namespace tls {

class MpiComm final : public Comm {
 public:
  // Takes ownership of comm (freed in the destructor unless it is MPI_COMM_WORLD).
  MpiComm(MPI_Comm comm, std::string name);
  ~MpiComm() override;
  MpiComm(const MpiComm&) = delete;
  MpiComm& operator=(const MpiComm&) = delete;

  MPI_Comm handle() const { return comm_; }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string name() const override { return name_; }

  void allreduce_sum(Tensor& x) override;
  double allreduce_sum(double x) override;
  double allreduce_max(double x) override;
  void allgather(Tensor& out, const Tensor& in) override;
  void reduce_scatter_sum(Tensor& out, const Tensor& in) override;
  void broadcast(Tensor& x, int root) override;
  void barrier() override;
  std::unique_ptr<Request> isend(const Tensor& x, int dest, int tag) override;
  std::unique_ptr<Request> irecv(Tensor& x, int source, int tag) override;
  // MPI_Iallreduce: Open MPI's non-blocking collectives progress only inside MPI calls (wait()
  // and progress() are such calls).
  std::unique_ptr<Request> start_allreduce_sum(Tensor& x) override;

 private:
  MPI_Comm comm_;
  int rank_ = 0, size_ = 1;
  std::string name_;
};

// Initialises MPI once per process (thread level FUNNELED) and finalises it at exit. Errors on
// any communicator return codes instead of aborting silently, so they become tls::Error.
void mpi_initialize(int* argc, char*** argv);
bool mpi_initialized();

// The grid of docs/DESIGN.md section 3 over MPI_COMM_WORLD. Throws tls::Error (on every rank) when
// the world size is not tp * sp * dp.
Topology make_mpi_topology(int tp, int sp);

}  // namespace tls
