// NcclComm: the Comm over NCCL for device (CUDA) tensors of float32, float64 and int32.
//
// Bootstrap over MPI: rank 0 of the group's MPI communicator calls ncclGetUniqueId, MPI_Bcast
// hands the id to the group, every rank calls ncclCommInitRank. Each process drives one GPU,
// chosen from its node-local rank (MPI_Comm_split_type SHARED): select_local_device().
//
// Ordering: collectives run on the device's compute stream (kernels/cuda/common.h), so they are
// ordered with the kernels around them without host synchronisation ("blocking" in the Comm
// sense: every later device op sees the result). Scalar all-reduces and barrier go over MPI.
// Point-to-point (isend / irecv) runs on its own stream and NCCL communicator so halo
// exchanges overlap with compute: the ops posted since the last flush are launched together in
// one ncclGroupStart/End by start_posted() (which the halo exchange calls once both directions
// are posted) or at the first wait(), after the compute work queued before the batch's first
// post (an event recorded then: the send buffers are ready and the receive buffers free, while
// compute queued after the post runs alongside the transfer). NCCL has no tags: messages
// between a pair of ranks match in posting order, so post both sides of an exchange before
// starting it, as parallel/halo_exchange.cpp does. wait() makes the compute stream wait for the
// transfer; it does not block the host. start_allgather / start_reduce_scatter_sum (the chunk
// exchanges) queue their collective on the same stream and communicator, after the posted
// transfers, behind the compute queued so far.
#pragma once

#include <cuda_runtime.h>
#include <mpi.h>
#include <nccl.h>

#include <memory>
#include <string>
#include <vector>

#include "parallel/comm.h"

namespace tls {

// Rank of this process among the processes of its node (MPI_Comm_split_type SHARED).
int node_local_rank(MPI_Comm comm);
// Makes device node_local_rank % device_count current and returns it; throws tls::Error when
// there is no CUDA device.
int select_local_device(MPI_Comm comm);

class NcclComm final : public Comm {
 public:
  // Collective over `comm`'s ranks (MPI must be initialised; `comm` is duplicated, not owned).
  NcclComm(MPI_Comm comm, int device, std::string name);
  ~NcclComm() override;
  NcclComm(const NcclComm&) = delete;
  NcclComm& operator=(const NcclComm&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string name() const override { return name_; }
  int device() const { return device_; }

  void allreduce_sum(Tensor& x) override;
  double allreduce_sum(double x) override;
  double allreduce_max(double x) override;
  void allgather(Tensor& out, const Tensor& in) override;
  void reduce_scatter_sum(Tensor& out, const Tensor& in) override;
  void broadcast(Tensor& x, int root) override;
  void barrier() override;
  std::unique_ptr<Request> isend(const Tensor& x, int dest, int tag) override;
  std::unique_ptr<Request> irecv(Tensor& x, int source, int tag) override;

  // Launches the point-to-point operations posted since the last flush (one NCCL group).
  void flush();
  void start_posted() override { flush(); }
  // On the point-to-point stream and communicator, after the compute queued so far; wait()
  // makes the compute stream wait for it.
  std::unique_ptr<Request> start_allgather(Tensor& out, const Tensor& in) override;
  std::unique_ptr<Request> start_reduce_scatter_sum(Tensor& out, const Tensor& in) override;

 private:
  struct Pending {
    bool send;
    Tensor tensor;
    int peer;
  };
  std::unique_ptr<Request> post(bool send, const Tensor& x, int peer);
  // The argument checks of allgather / reduce_scatter_sum and their start_ forms.
  void check_allgather(const Tensor& out, const Tensor& in) const;
  void check_reduce_scatter(const Tensor& out, const Tensor& in) const;
  // Frees the stream, events and MPI communicator (the destructor, or a failed constructor).
  void release_local();

  MPI_Comm mpi_ = MPI_COMM_NULL;
  ncclComm_t coll_ = nullptr, p2p_ = nullptr;
  cudaStream_t compute_ = nullptr, p2p_stream_ = nullptr;
  int device_ = 0, rank_ = 0, size_ = 1;
  std::string name_;
  std::vector<Pending> pending_;
  cudaEvent_t flushed_ = nullptr;       // recorded on p2p_stream_ after the last flushed group
  cudaEvent_t posted_ready_ = nullptr;  // recorded on compute_ when a batch's first op is posted
  uint64_t posted_ = 0, launched_ = 0;  // op counters: a request flushes if its op is pending
  // Queues `collective` on the point-to-point stream behind the compute queued so far.
  template <class F>
  std::unique_ptr<Request> start_on_side_stream(const Tensor& out, const Tensor& in, F collective);
  friend class NcclRequest;
  friend class NcclSideRequest;
};

}  // namespace tls
