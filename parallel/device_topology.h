// The grid's communicators for device tensors: with --device cuda the tp, sp, dp and dp x sp
// groups move device memory over NCCL (bootstrapped over the groups' MPI communicators), while
// the world communicator stays on MPI for the host-side agreements (errors, signals, the
// checkpoint's MPI-IO). With --device cpu the topology is returned unchanged.
#pragma once

#include "parallel/topology.h"

namespace tls {

Topology with_device_comms(Topology topo, Device device, int device_index);

}  // namespace tls
