// NcclComm (see nccl_comm.h): NCCL collectives on the compute stream, point-to-point in
// deferred groups on a separate stream and communicator, MPI for the bootstrap and scalars.
#include "parallel/cuda/nccl_comm.h"

#include <cstdio>
#include <exception>

#include "kernels/cuda/common.h"
#include "kernels/error.h"

namespace tls {

namespace {

void check_nccl(ncclResult_t status, const char* call, const std::string& comm) {
  if (status != ncclSuccess)
    throw Error(std::string("NCCL call ") + call + " on " + comm +
                " failed: " + ncclGetErrorString(status));
}

void check_mpi(int code, const char* call, const std::string& comm) {
  if (code == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(code, text, &len);
  throw Error(std::string("MPI call ") + call + " on " + comm +
              " failed: " + std::string(text, static_cast<size_t>(len)));
}

#define TLS_NCCL(call) check_nccl((call), #call, name_)
#define TLS_MPI(call) check_mpi((call), #call, name_)

ncclDataType_t nccl_type(DType dtype) {
  switch (dtype) {
    case DType::f32:
      return ncclFloat32;
    case DType::f64:
      return ncclFloat64;
    case DType::i32:
      return ncclInt32;
    case DType::bf16:  // a storage type for saved activations, which never travel
      throw Error("NcclComm: bfloat16 tensors are not communicated");
  }
  return ncclFloat32;
}

void check_device(const Tensor& x, const std::string& what) {
  if (!x.defined() || x.device() != Device::cuda)
    throw Error(
        what + ": NcclComm moves CUDA device tensors only, got " +
        (x.defined() ? "a host tensor " + x.shape_string() : std::string("an undefined tensor")));
}

}  // namespace

class NcclRequest final : public Request {
 public:
  NcclRequest(NcclComm* comm, uint64_t op, Tensor buffer)
      : comm_(comm), op_(op), buffer_(std::move(buffer)) {}
  ~NcclRequest() override {
    // Unwinding after an error on this rank: launching the transfers now could wait forever on
    // peers that wait for this rank elsewhere; the job is about to end (main's MPI_Abort).
    if (std::uncaught_exceptions() > 0) return;
    try {
      wait();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "tls_dist: NCCL request: %s\n", e.what());
    }
  }
  void wait() override {
    if (done_) return;
    done_ = true;
    if (comm_->launched_ <= op_) comm_->flush();
    // flushed_ marks the end of the latest group, which includes this op's.
    TLS_CUDA_CHECK(cudaStreamWaitEvent(comm_->compute_, comm_->flushed_, 0));
    buffer_ = Tensor();  // freed (stream-ordered) after the transfer from here on
  }

 private:
  NcclComm* comm_;
  uint64_t op_;
  Tensor buffer_;  // keeps the buffer alive until the compute stream waits for the transfer
  bool done_ = false;
};

// A collective queued on the point-to-point stream: wait() makes the compute stream wait for
// its end (the event `done`); the tensors live until then.
class NcclSideRequest final : public Request {
 public:
  NcclSideRequest(NcclComm* comm, cudaEvent_t done, Tensor out, Tensor in)
      : comm_(comm), done_(done), out_(std::move(out)), in_(std::move(in)) {}
  ~NcclSideRequest() override {
    if (std::uncaught_exceptions() > 0) return;  // as NcclRequest: never wait while unwinding
    try {
      wait();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "tls_dist: NCCL collective: %s\n", e.what());
    }
  }
  void wait() override {
    if (done_ == nullptr) return;
    TLS_CUDA_CHECK(cudaSetDevice(comm_->device_));
    TLS_CUDA_CHECK(cudaStreamWaitEvent(comm_->compute_, done_, 0));
    TLS_CUDA_CHECK(cudaEventDestroy(done_));  // released once the wait has happened
    done_ = nullptr;
    out_ = in_ = Tensor();  // freed (stream-ordered) after the collective from here on
  }

 private:
  NcclComm* comm_;
  cudaEvent_t done_;
  Tensor out_, in_;
};

int node_local_rank(MPI_Comm comm) {
  MPI_Comm local;
  check_mpi(MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &local),
            "MPI_Comm_split_type", "the node");
  int rank = 0;
  MPI_Comm_rank(local, &rank);
  MPI_Comm_free(&local);
  return rank;
}

int select_local_device(MPI_Comm comm) {
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess || count == 0) {
    cudaGetLastError();
    throw Error(std::string("no CUDA device is available for this rank: ") +
                (status != cudaSuccess ? cudaGetErrorString(status) : "0 devices"));
  }
  const int device = node_local_rank(comm) % count;
  TLS_CUDA_CHECK(cudaSetDevice(device));
  return device;
}

NcclComm::NcclComm(MPI_Comm comm, int device, std::string name)
    : device_(device), name_(std::move(name)) {
  TLS_MPI(MPI_Comm_dup(comm, &mpi_));
  MPI_Comm_set_errhandler(mpi_, MPI_ERRORS_RETURN);
  TLS_MPI(MPI_Comm_rank(mpi_, &rank_));
  TLS_MPI(MPI_Comm_size(mpi_, &size_));
  // The local steps first, then every rank of the group agrees they all succeeded before the
  // collective ones: a rank failing alone here would leave the others waiting in MPI_Bcast or
  // ncclCommInitRank for ever.
  ncclUniqueId ids[2];
  std::string local_error;
  try {
    TLS_CUDA_CHECK(cudaSetDevice(device_));
    compute_ = cuda::compute_stream(device_);
    TLS_CUDA_CHECK(cudaStreamCreateWithFlags(&p2p_stream_, cudaStreamNonBlocking));
    TLS_CUDA_CHECK(cudaEventCreateWithFlags(&flushed_, cudaEventDisableTiming));
    TLS_CUDA_CHECK(cudaEventCreateWithFlags(&posted_ready_, cudaEventDisableTiming));
    TLS_CUDA_CHECK(cudaEventRecord(flushed_, p2p_stream_));
    if (rank_ == 0) {
      TLS_NCCL(ncclGetUniqueId(&ids[0]));
      TLS_NCCL(ncclGetUniqueId(&ids[1]));
    }
  } catch (const std::exception& e) {
    local_error = e.what();
  }
  int failed = local_error.empty() ? 0 : 1, any_failed = 0;
  TLS_MPI(MPI_Allreduce(&failed, &any_failed, 1, MPI_INT, MPI_MAX, mpi_));
  if (any_failed) {
    release_local();
    throw Error(local_error.empty() ? "setting up NCCL on " + name_ + " failed on another rank"
                                    : local_error);
  }
  TLS_MPI(MPI_Bcast(ids, static_cast<int>(sizeof(ids)), MPI_BYTE, 0, mpi_));
  TLS_NCCL(ncclCommInitRank(&coll_, size_, ids[0], rank_));
  TLS_NCCL(ncclCommInitRank(&p2p_, size_, ids[1], rank_));
}

NcclComm::~NcclComm() {
  if (std::uncaught_exceptions() > 0) {
    // Error path: no flush, no synchronisation, no collective clean-up; ncclCommAbort ends this
    // rank's pending NCCL work without waiting for its peers (the stream, event and MPI
    // communicator are left to the process's end).
    if (p2p_) ncclCommAbort(p2p_);
    if (coll_) ncclCommAbort(coll_);
    return;
  }
  try {
    flush();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tls_dist: %s\n", e.what());
  }
  cudaSetDevice(device_);
  cudaStreamSynchronize(p2p_stream_);
  if (p2p_) ncclCommDestroy(p2p_);
  if (coll_) ncclCommDestroy(coll_);
  release_local();
}

void NcclComm::release_local() {
  if (flushed_) cudaEventDestroy(flushed_);
  if (posted_ready_) cudaEventDestroy(posted_ready_);
  if (p2p_stream_) cudaStreamDestroy(p2p_stream_);
  flushed_ = posted_ready_ = nullptr;
  p2p_stream_ = nullptr;
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized && mpi_ != MPI_COMM_NULL) MPI_Comm_free(&mpi_);
}

void NcclComm::check_allgather(const Tensor& out, const Tensor& in) const {
  check_device(out, "allgather on " + name_);
  check_device(in, "allgather on " + name_);
  if (out.numel() != in.numel() * size_ || out.dtype() != in.dtype())
    throw Error("allgather on " + name_ + ": out " + out.shape_string() + " is not " +
                std::to_string(size_) + " x in " + in.shape_string());
}

void NcclComm::check_reduce_scatter(const Tensor& out, const Tensor& in) const {
  check_device(out, "reduce_scatter on " + name_);
  check_device(in, "reduce_scatter on " + name_);
  if (in.numel() != out.numel() * size_ || out.dtype() != in.dtype())
    throw Error("reduce_scatter on " + name_ + ": in " + in.shape_string() + " is not " +
                std::to_string(size_) + " x out " + out.shape_string());
}

void NcclComm::allreduce_sum(Tensor& x) {
  check_device(x, "allreduce on " + name_);
  if (size_ == 1 || x.numel() == 0) return;
  TLS_CUDA_CHECK(cudaSetDevice(device_));
  TLS_NCCL(ncclAllReduce(x.raw(), x.raw(), static_cast<size_t>(x.numel()), nccl_type(x.dtype()),
                         ncclSum, coll_, compute_));
}

double NcclComm::allreduce_sum(double x) {
  double out = x;
  if (size_ > 1) TLS_MPI(MPI_Allreduce(&x, &out, 1, MPI_DOUBLE, MPI_SUM, mpi_));
  return out;
}

double NcclComm::allreduce_max(double x) {
  double out = x;
  if (size_ > 1) TLS_MPI(MPI_Allreduce(&x, &out, 1, MPI_DOUBLE, MPI_MAX, mpi_));
  return out;
}

void NcclComm::allgather(Tensor& out, const Tensor& in) {
  check_allgather(out, in);
  TLS_CUDA_CHECK(cudaSetDevice(device_));
  TLS_NCCL(ncclAllGather(in.raw(), out.raw(), static_cast<size_t>(in.numel()),
                         nccl_type(in.dtype()), coll_, compute_));
}

void NcclComm::reduce_scatter_sum(Tensor& out, const Tensor& in) {
  check_reduce_scatter(out, in);
  TLS_CUDA_CHECK(cudaSetDevice(device_));
  TLS_NCCL(ncclReduceScatter(in.raw(), out.raw(), static_cast<size_t>(out.numel()),
                             nccl_type(in.dtype()), ncclSum, coll_, compute_));
}

void NcclComm::broadcast(Tensor& x, int root) {
  check_device(x, "broadcast on " + name_);
  if (size_ == 1) return;
  TLS_CUDA_CHECK(cudaSetDevice(device_));
  TLS_NCCL(ncclBroadcast(x.raw(), x.raw(), static_cast<size_t>(x.numel()), nccl_type(x.dtype()),
                         root, coll_, compute_));
}

void NcclComm::barrier() {
  TLS_CUDA_CHECK(cudaStreamSynchronize(compute_));
  TLS_MPI(MPI_Barrier(mpi_));
}

template <class F>
std::unique_ptr<Request> NcclComm::start_on_side_stream(const Tensor& out, const Tensor& in,
                                                        F collective) {
  TLS_CUDA_CHECK(cudaSetDevice(device_));
  flush();  // the stream's order is the posting order: transfers posted earlier go first
  cudaEvent_t ready = nullptr, done = nullptr;
  TLS_CUDA_CHECK(cudaEventCreateWithFlags(&ready, cudaEventDisableTiming));
  TLS_CUDA_CHECK(cudaEventCreateWithFlags(&done, cudaEventDisableTiming));
  TLS_CUDA_CHECK(cudaEventRecord(ready, compute_));
  TLS_CUDA_CHECK(cudaStreamWaitEvent(p2p_stream_, ready, 0));
  TLS_CUDA_CHECK(cudaEventDestroy(ready));
  collective();
  TLS_CUDA_CHECK(cudaEventRecord(done, p2p_stream_));
  return std::make_unique<NcclSideRequest>(this, done, out, in);
}

std::unique_ptr<Request> NcclComm::start_allgather(Tensor& out, const Tensor& in) {
  check_allgather(out, in);
  return start_on_side_stream(out, in, [&] {
    TLS_NCCL(ncclAllGather(in.raw(), out.raw(), static_cast<size_t>(in.numel()),
                           nccl_type(in.dtype()), p2p_, p2p_stream_));
  });
}

std::unique_ptr<Request> NcclComm::start_reduce_scatter_sum(Tensor& out, const Tensor& in) {
  check_reduce_scatter(out, in);
  return start_on_side_stream(out, in, [&] {
    TLS_NCCL(ncclReduceScatter(in.raw(), out.raw(), static_cast<size_t>(out.numel()),
                               nccl_type(in.dtype()), ncclSum, p2p_, p2p_stream_));
  });
}

std::unique_ptr<Request> NcclComm::post(bool send, const Tensor& x, int peer) {
  check_device(x, std::string(send ? "isend" : "irecv") + " on " + name_);
  if (peer < 0 || peer >= size_)
    throw Error((send ? "isend to rank " : "irecv from rank ") + std::to_string(peer) + " on " +
                name_ + " of size " + std::to_string(size_));
  if (pending_.empty()) {  // the batch's transfers depend on the compute queued until now
    TLS_CUDA_CHECK(cudaSetDevice(device_));
    TLS_CUDA_CHECK(cudaEventRecord(posted_ready_, compute_));
  }
  pending_.push_back({send, x, peer});
  return std::make_unique<NcclRequest>(this, posted_++, x);
}

std::unique_ptr<Request> NcclComm::isend(const Tensor& x, int dest, int /*tag*/) {
  return post(true, x, dest);
}

std::unique_ptr<Request> NcclComm::irecv(Tensor& x, int source, int /*tag*/) {
  return post(false, x, source);
}

void NcclComm::flush() {
  if (pending_.empty()) return;
  TLS_CUDA_CHECK(cudaSetDevice(device_));
  // The transfers start once the compute work queued before the batch's first post (which
  // produced the send buffers and last used the receive buffers) is done.
  TLS_CUDA_CHECK(cudaStreamWaitEvent(p2p_stream_, posted_ready_, 0));
  TLS_NCCL(ncclGroupStart());
  for (Pending& p : pending_) {
    const size_t n = static_cast<size_t>(p.tensor.numel());
    if (p.send)
      TLS_NCCL(ncclSend(p.tensor.raw(), n, nccl_type(p.tensor.dtype()), p.peer, p2p_, p2p_stream_));
    else
      TLS_NCCL(ncclRecv(p.tensor.raw(), n, nccl_type(p.tensor.dtype()), p.peer, p2p_, p2p_stream_));
  }
  TLS_NCCL(ncclGroupEnd());
  TLS_CUDA_CHECK(cudaEventRecord(flushed_, p2p_stream_));
  launched_ = posted_;
  pending_.clear();
}

}  // namespace tls
