#include "parallel/mpi_comm.h"

#include <cstdlib>

#include "kernels/error.h"

namespace tls {
namespace {

MPI_Datatype mpi_type(DType dtype) {
  switch (dtype) {
    case DType::f32:
      return MPI_FLOAT;
    case DType::f64:
      return MPI_DOUBLE;
    case DType::i32:
      return MPI_INT;
    case DType::bf16:  // moved, never reduced (a storage type)
      return MPI_UINT16_T;
  }
  return MPI_BYTE;
}

void check(int code, const std::string& what, const std::string& comm) {
  if (code == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(code, text, &len);
  throw Error("MPI " + what + " on " + comm +
              " failed: " + std::string(text, static_cast<size_t>(len)));
}

int count_of(const Tensor& x) {
  if (x.numel() > INT32_MAX)
    throw Error("MPI: tensor " + x.shape_string() + " exceeds 2^31 elements");
  return static_cast<int>(x.numel());
}

class MpiRequest final : public Request {
 public:
  explicit MpiRequest(std::string what) : what_(std::move(what)) {}
  ~MpiRequest() override {
    if (request_ != MPI_REQUEST_NULL) MPI_Wait(&request_, MPI_STATUS_IGNORE);
  }
  void wait() override {
    if (request_ == MPI_REQUEST_NULL) return;
    check(MPI_Wait(&request_, MPI_STATUS_IGNORE), what_, "request");
  }
  void progress() override {
    if (request_ == MPI_REQUEST_NULL) return;
    int done = 0;
    check(MPI_Test(&request_, &done, MPI_STATUS_IGNORE), what_, "request");
  }
  MPI_Request request_ = MPI_REQUEST_NULL;
  Tensor buffer;  // kept alive until the operation completes

 private:
  std::string what_;
};

}  // namespace

MpiComm::MpiComm(MPI_Comm comm, std::string name) : comm_(comm), name_(std::move(name)) {
  MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
  MPI_Comm_rank(comm_, &rank_);
  MPI_Comm_size(comm_, &size_);
}

MpiComm::~MpiComm() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized && comm_ != MPI_COMM_WORLD && comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
}

void MpiComm::allreduce_sum(Tensor& x) {
  if (size_ == 1) return;
  check(MPI_Allreduce(MPI_IN_PLACE, x.raw(), count_of(x), mpi_type(x.dtype()), MPI_SUM, comm_),
        "allreduce", name_);
}

double MpiComm::allreduce_sum(double x) {
  double out = x;
  if (size_ > 1) check(MPI_Allreduce(&x, &out, 1, MPI_DOUBLE, MPI_SUM, comm_), "allreduce", name_);
  return out;
}

double MpiComm::allreduce_max(double x) {
  double out = x;
  if (size_ > 1) check(MPI_Allreduce(&x, &out, 1, MPI_DOUBLE, MPI_MAX, comm_), "allreduce", name_);
  return out;
}

void MpiComm::allgather(Tensor& out, const Tensor& in) {
  if (out.numel() != in.numel() * size_ || out.dtype() != in.dtype())
    throw Error("allgather on " + name_ + ": out " + out.shape_string() + " is not " +
                std::to_string(size_) + " x in " + in.shape_string());
  check(MPI_Allgather(in.raw(), count_of(in), mpi_type(in.dtype()), out.raw(), count_of(in),
                      mpi_type(in.dtype()), comm_),
        "allgather", name_);
}

void MpiComm::reduce_scatter_sum(Tensor& out, const Tensor& in) {
  if (in.numel() != out.numel() * size_ || out.dtype() != in.dtype())
    throw Error("reduce_scatter on " + name_ + ": in " + in.shape_string() + " is not " +
                std::to_string(size_) + " x out " + out.shape_string());
  check(MPI_Reduce_scatter_block(in.raw(), out.raw(), count_of(out), mpi_type(in.dtype()), MPI_SUM,
                                 comm_),
        "reduce_scatter", name_);
}

void MpiComm::broadcast(Tensor& x, int root) {
  if (size_ == 1) return;
  check(MPI_Bcast(x.raw(), count_of(x), mpi_type(x.dtype()), root, comm_), "broadcast", name_);
}

void MpiComm::barrier() { check(MPI_Barrier(comm_), "barrier", name_); }

std::unique_ptr<Request> MpiComm::isend(const Tensor& x, int dest, int tag) {
  auto r = std::make_unique<MpiRequest>("send to rank " + std::to_string(dest) + " of " + name_);
  r->buffer = x;  // the message may leave after the caller has dropped its tensor
  check(MPI_Isend(x.raw(), count_of(x), mpi_type(x.dtype()), dest, tag, comm_, &r->request_),
        "isend", name_);
  return r;
}

std::unique_ptr<Request> MpiComm::irecv(Tensor& x, int source, int tag) {
  auto r =
      std::make_unique<MpiRequest>("receive from rank " + std::to_string(source) + " of " + name_);
  r->buffer = x;
  check(MPI_Irecv(x.raw(), count_of(x), mpi_type(x.dtype()), source, tag, comm_, &r->request_),
        "irecv", name_);
  return r;
}

std::unique_ptr<Request> MpiComm::start_allreduce_sum(Tensor& x) {
  if (size_ == 1) return completed_request();
  auto r = std::make_unique<MpiRequest>("allreduce on " + name_);
  r->buffer = x;
  check(MPI_Iallreduce(MPI_IN_PLACE, x.raw(), count_of(x), mpi_type(x.dtype()), MPI_SUM, comm_,
                       &r->request_),
        "iallreduce", name_);
  return r;
}

static void finalize_at_exit() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

void mpi_initialize(int* argc, char*** argv) {
  if (mpi_initialized()) return;
  int provided = 0;
  MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  std::atexit(finalize_at_exit);
}

bool mpi_initialized() {
  int flag = 0;
  MPI_Initialized(&flag);
  return flag != 0;
}

Topology make_mpi_topology(int tp, int sp) {
  if (!mpi_initialized()) throw Error("make_mpi_topology: MPI is not initialised");
  int world_rank = 0, world_size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &world_size);
  if (tp < 1 || sp < 1)
    throw Error("--tp " + std::to_string(tp) + " and --sp " + std::to_string(sp) +
                " must be at least 1");
  if (world_size % (tp * sp) != 0)
    throw Error("the world size " + std::to_string(world_size) + " is not a multiple of --tp " +
                std::to_string(tp) + " x --sp " + std::to_string(sp));
  Topology t;
  t.layout = {tp, sp, world_size / (tp * sp)};
  t.world_rank = world_rank;
  t.tp_rank = world_rank % tp;
  t.sp_rank = (world_rank / tp) % sp;
  t.dp_rank = world_rank / (tp * sp);
  auto split = [&](int color, int key, const std::string& what) {
    MPI_Comm c;
    check(MPI_Comm_split(MPI_COMM_WORLD, color, key, &c), "comm_split", "world");
    return std::make_shared<MpiComm>(c, what + " of world rank " + std::to_string(world_rank));
  };
  t.world = std::make_shared<MpiComm>(MPI_COMM_WORLD, "world");
  t.tp = split(t.dp_rank * sp + t.sp_rank, t.tp_rank, "tp group");
  t.sp = split(t.dp_rank * tp + t.tp_rank, t.sp_rank, "sp group");
  t.dp = split(t.sp_rank * tp + t.tp_rank, t.dp_rank, "dp group");
  t.dp_sp = split(t.tp_rank, t.dp_rank * sp + t.sp_rank, "dp x sp group");
  return t;
}

}  // namespace tls
