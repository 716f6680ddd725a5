// SelfComm: the Comm of a group of one process. Every collective is the identity (allgather and
// reduce_scatter copy), so single-process runs go through the same code as parallel ones.
#include <cstring>

#include "kernels/error.h"
#include "parallel/comm.h"
#include "parallel/topology.h"

namespace tls {
namespace {

class SelfComm final : public Comm {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string name() const override { return "single process"; }
  void allreduce_sum(Tensor&) override {}
  double allreduce_sum(double x) override { return x; }
  double allreduce_max(double x) override { return x; }
  void allgather(Tensor& out, const Tensor& in) override { copy(out, in); }
  void reduce_scatter_sum(Tensor& out, const Tensor& in) override { copy(out, in); }
  void broadcast(Tensor&, int) override {}
  void barrier() override {}
  std::unique_ptr<Request> isend(const Tensor&, int, int) override {
    throw Error("single process: there is no peer to send to");
  }
  std::unique_ptr<Request> irecv(Tensor&, int, int) override {
    throw Error("single process: there is no peer to receive from");
  }

 private:
  static void copy(Tensor& out, const Tensor& in) {
    if (out.bytes() != in.bytes()) throw Error("single process: collective buffers differ in size");
    if (out.raw() != in.raw()) std::memcpy(out.raw(), in.raw(), in.bytes());
  }
};

}  // namespace

std::unique_ptr<Comm> make_self_comm() { return std::make_unique<SelfComm>(); }

Topology Topology::single() {
  Topology t;
  std::shared_ptr<Comm> self = make_self_comm();
  t.world = t.tp = t.sp = t.dp = t.dp_sp = self;
  return t;
}

}  // namespace tls
