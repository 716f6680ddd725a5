// The CUDA emulator's NCCL (include/nccl.h) over MPI. A communicator is an MPI communicator
// split from MPI_COMM_WORLD by its unique id (every world rank creates NCCL communicators in the
// same order, as tls_dist's topology does, so the split is collective). Buffers must be device
// memory, wholly: a host buffer or one too short is a fault, as on a GPU.
#include "include/nccl.h"

#include <mpi.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "emulator_internal.h"

struct ncclComm {
  MPI_Comm mpi = MPI_COMM_NULL;
  int rank = 0, size = 1;
};

namespace {

struct PendingP2p {
  bool send;
  void* buffer;
  size_t count;
  ncclDataType_t type;
  int peer;
  ncclComm_t comm;
};

int g_group_depth = 0;
std::vector<PendingP2p> g_pending;
uint32_t g_ids_made = 0;

size_t type_size(ncclDataType_t t) {
  switch (t) {
    case ncclInt8:
    case ncclUint8:
      return 1;
    case ncclFloat16:
      return 2;
    case ncclInt32:
    case ncclUint32:
    case ncclFloat32:
      return 4;
    case ncclInt64:
    case ncclUint64:
    case ncclFloat64:
      return 8;
  }
  return 0;
}

MPI_Datatype mpi_type(ncclDataType_t t) {
  switch (t) {
    case ncclInt8:
      return MPI_INT8_T;
    case ncclUint8:
      return MPI_UINT8_T;
    case ncclInt32:
      return MPI_INT32_T;
    case ncclUint32:
      return MPI_UINT32_T;
    case ncclInt64:
      return MPI_INT64_T;
    case ncclUint64:
      return MPI_UINT64_T;
    case ncclFloat32:
      return MPI_FLOAT;
    case ncclFloat64:
      return MPI_DOUBLE;
    case ncclFloat16:
      break;
  }
  return MPI_DATATYPE_NULL;
}

MPI_Op mpi_op(ncclRedOp_t op) {
  switch (op) {
    case ncclSum:
      return MPI_SUM;
    case ncclProd:
      return MPI_PROD;
    case ncclMax:
      return MPI_MAX;
    case ncclMin:
      return MPI_MIN;
  }
  return MPI_OP_NULL;
}

// The checks every call shares: a live communicator, a known type, device buffers.
ncclResult_t check(ncclComm_t comm, ncclDataType_t type, const char* call,
                   std::initializer_list<std::pair<const void*, size_t>> buffers) {
  if (!comm || comm->mpi == MPI_COMM_NULL || mpi_type(type) == MPI_DATATYPE_NULL)
    return ncclInvalidArgument;
  for (const auto& [ptr, elements] : buffers)
    if (elements > 0 && !tls_emu::is_device_range(ptr, elements * type_size(type)))
      tls_emu::device_fault(std::string(call) + ": a buffer of " + std::to_string(elements) +
                            " elements is not wholly device memory");
  return ncclSuccess;
}

ncclResult_t mpi_result(int code) { return code == MPI_SUCCESS ? ncclSuccess : ncclSystemError; }

ncclResult_t run_p2p(const std::vector<PendingP2p>& ops) {
  std::vector<MPI_Request> requests(ops.size());
  tls_emu::DeviceAccess access;
  for (const PendingP2p& p : ops) tls_emu::open_range(p.buffer);
  for (size_t i = 0; i < ops.size(); ++i) {
    const PendingP2p& p = ops[i];
    const int count = static_cast<int>(p.count);
    const int code =
        p.send ? MPI_Isend(p.buffer, count, mpi_type(p.type), p.peer, 0, p.comm->mpi, &requests[i])
               : MPI_Irecv(p.buffer, count, mpi_type(p.type), p.peer, 0, p.comm->mpi, &requests[i]);
    if (code != MPI_SUCCESS) return ncclSystemError;
  }
  return mpi_result(
      MPI_Waitall(static_cast<int>(requests.size()), requests.data(), MPI_STATUSES_IGNORE));
}

}  // namespace

const char* ncclGetErrorString(ncclResult_t result) {
  switch (result) {
    case ncclSuccess:
      return "no error";
    case ncclUnhandledCudaError:
      return "unhandled cuda error";
    case ncclSystemError:
      return "unhandled system error";
    case ncclInternalError:
      return "internal error";
    case ncclInvalidArgument:
      return "invalid argument";
    case ncclInvalidUsage:
      return "invalid usage";
    case ncclRemoteError:
      return "remote process exited or there was a network error";
  }
  return "unknown result code";
}

ncclResult_t ncclGetUniqueId(ncclUniqueId* id) {
  int world_rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
  std::memset(id, 0, sizeof *id);
  const uint32_t parts[2] = {static_cast<uint32_t>(world_rank), g_ids_made++};
  std::memcpy(id->internal, parts, sizeof parts);
  return ncclSuccess;
}

ncclResult_t ncclCommInitRank(ncclComm_t* comm, int nranks, ncclUniqueId id, int rank) {
  if (!comm || nranks < 1 || rank < 0 || rank >= nranks) return ncclInvalidArgument;
  uint32_t parts[2];
  std::memcpy(parts, id.internal, sizeof parts);
  const int color = static_cast<int>(parts[0] * 4096 + parts[1] % 4096);
  auto* c = new ncclComm;
  if (MPI_Comm_split(MPI_COMM_WORLD, color, rank, &c->mpi) != MPI_SUCCESS) {
    delete c;
    return ncclSystemError;
  }
  MPI_Comm_rank(c->mpi, &c->rank);
  MPI_Comm_size(c->mpi, &c->size);
  if (c->size != nranks || c->rank != rank) {
    MPI_Comm_free(&c->mpi);
    delete c;
    return ncclInvalidUsage;
  }
  *comm = c;
  return ncclSuccess;
}

ncclResult_t ncclCommDestroy(ncclComm_t comm) {
  if (!comm) return ncclInvalidArgument;
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized && comm->mpi != MPI_COMM_NULL) MPI_Comm_free(&comm->mpi);
  delete comm;
  return ncclSuccess;
}

ncclResult_t ncclCommAbort(ncclComm_t comm) {
  delete comm;  // no collective clean-up: the peers may be gone
  return ncclSuccess;
}

ncclResult_t ncclGroupStart() {
  ++g_group_depth;
  return ncclSuccess;
}

ncclResult_t ncclGroupEnd() {
  if (g_group_depth == 0) return ncclInvalidUsage;
  if (--g_group_depth > 0) return ncclSuccess;
  std::vector<PendingP2p> ops;
  ops.swap(g_pending);
  return run_p2p(ops);
}

ncclResult_t ncclAllReduce(const void* send, void* recv, size_t count, ncclDataType_t type,
                           ncclRedOp_t op, ncclComm_t comm, cudaStream_t) {
  if (const ncclResult_t r = check(comm, type, "ncclAllReduce", {{send, count}, {recv, count}}))
    return r;
  tls_emu::DeviceAccess access;
  tls_emu::open_range(send);
  tls_emu::open_range(recv);
  return mpi_result(MPI_Allreduce(send == recv ? MPI_IN_PLACE : send, recv, static_cast<int>(count),
                                  mpi_type(type), mpi_op(op), comm->mpi));
}

ncclResult_t ncclAllGather(const void* send, void* recv, size_t sendcount, ncclDataType_t type,
                           ncclComm_t comm, cudaStream_t) {
  if (const ncclResult_t r = check(
          comm, type, "ncclAllGather",
          {{send, sendcount}, {recv, sendcount * static_cast<size_t>(comm ? comm->size : 1)}}))
    return r;
  tls_emu::DeviceAccess access;
  tls_emu::open_range(recv);
  std::vector<char> staged(static_cast<const char*>(send),
                           static_cast<const char*>(send) + sendcount * type_size(type));
  return mpi_result(MPI_Allgather(staged.data(), static_cast<int>(sendcount), mpi_type(type), recv,
                                  static_cast<int>(sendcount), mpi_type(type), comm->mpi));
}

ncclResult_t ncclReduceScatter(const void* send, void* recv, size_t recvcount, ncclDataType_t type,
                               ncclRedOp_t op, ncclComm_t comm, cudaStream_t) {
  if (const ncclResult_t r = check(
          comm, type, "ncclReduceScatter",
          {{send, recvcount * static_cast<size_t>(comm ? comm->size : 1)}, {recv, recvcount}}))
    return r;
  tls_emu::DeviceAccess access;
  tls_emu::open_range(recv);
  const size_t total = recvcount * static_cast<size_t>(comm->size) * type_size(type);
  std::vector<char> staged(static_cast<const char*>(send), static_cast<const char*>(send) + total);
  return mpi_result(MPI_Reduce_scatter_block(staged.data(), recv, static_cast<int>(recvcount),
                                             mpi_type(type), mpi_op(op), comm->mpi));
}

ncclResult_t ncclBroadcast(const void* send, void* recv, size_t count, ncclDataType_t type,
                           int root, ncclComm_t comm, cudaStream_t) {
  if (const ncclResult_t r = check(comm, type, "ncclBroadcast", {{recv, count}})) return r;
  if (root < 0 || root >= comm->size) return ncclInvalidArgument;
  if (comm->rank == root) check(comm, type, "ncclBroadcast", {{send, count}});
  tls_emu::DeviceAccess access;
  tls_emu::open_range(recv);
  if (comm->rank == root && send != recv) std::memmove(recv, send, count * type_size(type));
  return mpi_result(MPI_Bcast(recv, static_cast<int>(count), mpi_type(type), root, comm->mpi));
}

ncclResult_t ncclSend(const void* send, size_t count, ncclDataType_t type, int peer,
                      ncclComm_t comm, cudaStream_t) {
  if (const ncclResult_t r = check(comm, type, "ncclSend", {{send, count}})) return r;
  if (peer < 0 || peer >= comm->size) return ncclInvalidArgument;
  PendingP2p p{true, const_cast<void*>(send), count, type, peer, comm};
  if (g_group_depth > 0) {
    g_pending.push_back(p);
    return ncclSuccess;
  }
  return run_p2p({p});
}

ncclResult_t ncclRecv(void* recv, size_t count, ncclDataType_t type, int peer, ncclComm_t comm,
                      cudaStream_t) {
  if (const ncclResult_t r = check(comm, type, "ncclRecv", {{recv, count}})) return r;
  if (peer < 0 || peer >= comm->size) return ncclInvalidArgument;
  PendingP2p p{false, recv, count, type, peer, comm};
  if (g_group_depth > 0) {
    g_pending.push_back(p);
    return ncclSuccess;
  }
  return run_p2p({p});
}
