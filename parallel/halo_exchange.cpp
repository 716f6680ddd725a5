#include "parallel/halo_exchange.h"

#include "parallel/fault_injection.h"
#include "parallel/traffic.h"

namespace tls {
namespace {

void exchange(const Topology& topo, const Tensor& send_keys, const Tensor& send_values,
              Tensor& recv_keys, Tensor& recv_values, int send_to, int recv_from, int tag,
              std::vector<std::unique_ptr<Request>>& out) {
  Comm& sp = *topo.sp;
  out.push_back(sp.irecv(recv_keys, recv_from, 2 * tag));
  out.push_back(sp.irecv(recv_values, recv_from, 2 * tag + 1));
  out.push_back(sp.isend(send_keys, send_to, 2 * tag));
  out.push_back(sp.isend(send_values, send_to, 2 * tag + 1));
  sp.start_posted();  // the transfers run while the caller computes until wait()
  traffic().halo += static_cast<int64_t>(send_keys.bytes() + send_values.bytes());
}

}  // namespace

HaloExchange halo_exchange_forward_start(Ops& ops, const Topology& topo, const Tensor& tail_keys,
                                         const Tensor& tail_values, Tensor& halo_keys,
                                         Tensor& halo_values, int tag) {
  HaloExchange h;
  const int n = topo.sp->size(), s = topo.sp->rank();
  if (n == 1) {
    ops.copy(halo_keys, tail_keys);
    ops.copy(halo_values, tail_values);
    return h;
  }
  maybe_inject_fault("halo", topo.world_rank);
  exchange(topo, tail_keys, tail_values, halo_keys, halo_values, (s + 1) % n, (s + n - 1) % n, tag,
           h.requests_);
  maybe_inject_fault("halo_posted", topo.world_rank);
  return h;
}

HaloExchange halo_exchange_backward_start(Ops& ops, const Topology& topo, const Tensor& dhalo_keys,
                                          const Tensor& dhalo_values, Tensor& dtail_keys,
                                          Tensor& dtail_values, int tag) {
  HaloExchange h;
  const int n = topo.sp->size(), s = topo.sp->rank();
  if (n == 1) {
    ops.copy(dtail_keys, dhalo_keys);
    ops.copy(dtail_values, dhalo_values);
    return h;
  }
  exchange(topo, dhalo_keys, dhalo_values, dtail_keys, dtail_values, (s + n - 1) % n, (s + 1) % n,
           tag, h.requests_);
  return h;
}

void HaloExchange::wait() {
  for (auto& r : requests_) r->wait();
  requests_.clear();
}

void halo_exchange_forward(Ops& ops, const Topology& topo, const Tensor& tail_keys,
                           const Tensor& tail_values, Tensor& halo_keys, Tensor& halo_values,
                           int tag) {
  halo_exchange_forward_start(ops, topo, tail_keys, tail_values, halo_keys, halo_values, tag)
      .wait();
}

void halo_exchange_backward(Ops& ops, const Topology& topo, const Tensor& dhalo_keys,
                            const Tensor& dhalo_values, Tensor& dtail_keys, Tensor& dtail_values,
                            int tag) {
  halo_exchange_backward_start(ops, topo, dhalo_keys, dhalo_values, dtail_keys, dtail_values, tag)
      .wait();
}

}  // namespace tls
