#include "parallel/device_topology.h"

#include "kernels/error.h"
#include "parallel/mpi_comm.h"

#ifdef TLS_HAVE_CUDA
#include "parallel/cuda/nccl_comm.h"
#endif

namespace tls {

Topology with_device_comms(Topology topo, Device device, int device_index) {
  if (device == Device::cpu) return topo;
#ifdef TLS_HAVE_CUDA
  auto nccl = [&](const std::shared_ptr<Comm>& group) -> std::shared_ptr<Comm> {
    auto* mpi = dynamic_cast<MpiComm*>(group.get());
    if (mpi == nullptr) return group;  // a one-process group: every collective is the identity
    return std::make_shared<NcclComm>(mpi->handle(), device_index, group->name() + " (NCCL)");
  };
  topo.tp = nccl(topo.tp);
  topo.sp = nccl(topo.sp);
  topo.dp = nccl(topo.dp);
  topo.dp_sp = nccl(topo.dp_sp);
  return topo;
#else
  (void)device_index;
  throw Error("--device cuda: this tls_dist was built without the CUDA backend");
#endif
}

}  // namespace tls
