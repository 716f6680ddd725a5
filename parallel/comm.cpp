// Comm's defaults: the start_* collectives as their blocking forms, and the completed Request
// they return.
#include "parallel/comm.h"

namespace tls {
namespace {

class DoneRequest final : public Request {
 public:
  void wait() override {}
};

}  // namespace

std::unique_ptr<Request> completed_request() { return std::make_unique<DoneRequest>(); }

std::unique_ptr<Request> Comm::start_allgather(Tensor& out, const Tensor& in) {
  allgather(out, in);
  return completed_request();
}

std::unique_ptr<Request> Comm::start_allreduce_sum(Tensor& x) {
  allreduce_sum(x);
  return completed_request();
}

std::unique_ptr<Request> Comm::start_reduce_scatter_sum(Tensor& out, const Tensor& in) {
  reduce_scatter_sum(out, in);
  return completed_request();
}

}  // namespace tls
