// Comm: how ranks talk. One of the two seams of tls_dist (the other is Ops): layers and the
// parallel operations call these and never ask which transport runs them. MpiComm moves host
// memory over MPI; the NCCL implementation (parallel/cuda) moves device memory. A Comm of size 1
// (SelfComm) makes every collective the identity, so single-process code runs the same path.
//
// All collectives are blocking unless they return a Request. Tensors must be contiguous and of
// one dtype per call.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "kernels/tensor.h"

namespace tls {

// A pending non-blocking operation; wait() completes it (and is a no-op once completed).
class Request {
 public:
  virtual ~Request() = default;
  virtual void wait() = 0;
  // Lets the operation advance without blocking: MPI moves a non-blocking collective's data only
  // inside MPI calls, so a caller computing between starts and waits calls this now and then.
  virtual void progress() {}
};

class Comm {
 public:
  virtual ~Comm() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // A human-readable name for messages, e.g. "tp group of world rank 3".
  virtual std::string name() const = 0;

  virtual void allreduce_sum(Tensor& x) = 0;
  virtual double allreduce_sum(double x) = 0;
  virtual double allreduce_max(double x) = 0;
  // out: [size * n] from every rank's in: [n], in rank order.
  virtual void allgather(Tensor& out, const Tensor& in) = 0;
  // in: [size * n] summed over ranks; out: [n] receives this rank's block.
  virtual void reduce_scatter_sum(Tensor& out, const Tensor& in) = 0;
  virtual void broadcast(Tensor& x, int root) = 0;
  virtual void barrier() = 0;
  virtual std::unique_ptr<Request> isend(const Tensor& x, int dest, int tag) = 0;
  virtual std::unique_ptr<Request> irecv(Tensor& x, int source, int tag) = 0;
  // Starts what isend / irecv have posted: a device Comm may hold posted transfers to launch
  // them as one batch (NCCL groups), so an exchange calls this once all of its sides are posted.
  // MPI starts each transfer when it is posted.
  virtual void start_posted() {}

  // allgather / reduce_scatter_sum that may run alongside the caller's later work until wait()
  // (NCCL: on the point-to-point stream). out and in must not be touched before wait(); the
  // request keeps them alive. The default runs the blocking collective at once.
  virtual std::unique_ptr<Request> start_allgather(Tensor& out, const Tensor& in);
  virtual std::unique_ptr<Request> start_reduce_scatter_sum(Tensor& out, const Tensor& in);
  // allreduce_sum of x in place that may run alongside the caller's later work until wait(); x
  // must not be touched before then (the request keeps it alive). Each element is summed by the
  // same rule as allreduce_sum where the transport allows (MPI: see MpiComm). The default runs
  // the blocking collective at once.
  virtual std::unique_ptr<Request> start_allreduce_sum(Tensor& x);
};

// A Request that is complete from the start (what blocking operations return).
std::unique_ptr<Request> completed_request();

// The one-process Comm: every collective is the identity.
std::unique_ptr<Comm> make_self_comm();

}  // namespace tls
