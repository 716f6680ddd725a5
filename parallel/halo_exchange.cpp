#include "parallel/halo_exchange.h"

#include "parallel/fault_injection.h"
#include "parallel/sequence_layout.h"
#include "parallel/traffic.h"

namespace tls {
HaloExchange halo_exchange_start(Ops& ops, const Topology& topo,
                                 const std::vector<Tensor>& send_keys,
                                 const std::vector<Tensor>& send_values,
                                 std::vector<Tensor>& recv_keys, std::vector<Tensor>& recv_values,
                                 int tag, bool forward) {
  HaloExchange h;
  Comm& comm = *topo.sp;
  const int me = comm.rank();
  // Slice lengths do not matter here: a layout of one position per slice.
  const SequenceLayout layout(topo.layout.sp_order, comm.size(),
                              2 * static_cast<int64_t>(comm.size()));
  const int S = layout.slices();
  if (forward && comm.size() > 1) maybe_inject_fault("halo", topo.world_rank);
  int64_t bytes = 0;
  for (int g = 0; g < S; ++g) {
    // Forward: the tail of slice g - 1 (cyclically) becomes slice g's halo; backward: reversed.
    const int pred = (g + S - 1) % S;
    const int from_slice = forward ? pred : g, to_slice = forward ? g : pred;
    const int from = layout.owner(from_slice), to = layout.owner(to_slice);
    const size_t src = static_cast<size_t>(layout.local_index(from_slice));
    const size_t dst = static_cast<size_t>(layout.local_index(to_slice));
    if (from == me && to == me) {
      ops.copy(recv_keys[dst], send_keys[src]);
      ops.copy(recv_values[dst], send_values[src]);
    } else if (to == me) {
      h.requests_.push_back(comm.irecv(recv_keys[dst], from, 2 * tag));
      h.requests_.push_back(comm.irecv(recv_values[dst], from, 2 * tag + 1));
    } else if (from == me) {
      h.requests_.push_back(comm.isend(send_keys[src], to, 2 * tag));
      h.requests_.push_back(comm.isend(send_values[src], to, 2 * tag + 1));
      bytes += static_cast<int64_t>(send_keys[src].bytes() + send_values[src].bytes());
    }
  }
  if (!h.requests_.empty()) comm.start_posted();  // the transfers run until wait()
  traffic().halo += bytes;
  if (forward && !h.requests_.empty()) maybe_inject_fault("halo_posted", topo.world_rank);
  return h;
}

HaloExchange halo_exchange_forward_start(Ops& ops, const Topology& topo, const Tensor& tail_keys,
                                         const Tensor& tail_values, Tensor& halo_keys,
                                         Tensor& halo_values, int tag) {
  std::vector<Tensor> hk{halo_keys}, hv{halo_values};
  return halo_exchange_start(ops, topo, {tail_keys}, {tail_values}, hk, hv, tag, true);
}

HaloExchange halo_exchange_backward_start(Ops& ops, const Topology& topo, const Tensor& dhalo_keys,
                                          const Tensor& dhalo_values, Tensor& dtail_keys,
                                          Tensor& dtail_values, int tag) {
  std::vector<Tensor> tk{dtail_keys}, tv{dtail_values};
  return halo_exchange_start(ops, topo, {dhalo_keys}, {dhalo_values}, tk, tv, tag, false);
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
