#include "runtime/run_setup.h"

#include <mpi.h>
#include <omp.h>

#include "kernels/device.h"
#include "kernels/error.h"
#include "parallel/device_topology.h"
#include "parallel/mpi_comm.h"
#include "runtime/option_table.h"
#include "runtime/placement_check.h"

namespace tls {

DType dtype_of_precision(const std::string& precision) {
  if (precision == "fp64") return DType::f64;
  if (precision == "fp32" || precision == "bf16") return DType::f32;
  throw Error("--precision " + precision + " must be fp32, fp64 or bf16");
}

GemmInputs gemm_inputs_of(const RunOptions& o) {
  if (o.precision == "bf16") return GemmInputs::bf16;
  return o.allow_tf32 ? GemmInputs::tf32 : GemmInputs::exact;
}

namespace {

// This process's rank among the processes of its node, and their number.
std::pair<int, int> node_rank_and_size() {
  MPI_Comm node;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node);
  int rank = 0, size = 1;
  MPI_Comm_rank(node, &rank);
  MPI_Comm_size(node, &size);
  MPI_Comm_free(&node);
  return {rank, size};
}

}  // namespace

int local_rank() { return node_rank_and_size().first; }

std::unique_ptr<Ops> make_backend(const RunOptions& o) {
  std::unique_ptr<Ops> ops;
  if (o.device == "cpu") {
    ops = make_ops(Device::cpu, 0);
  } else {
    const int count = cuda_device_count();
    if (count == 0) throw Error("--device cuda: " + cuda_unavailable_reason());
    ops = make_ops(Device::cuda, local_rank() % count);
  }
  ops->set_gemm_inputs(gemm_inputs_of(o));
  return ops;
}

Topology make_run_topology(const RunOptions& o) {
  // On the CPU every rank computes with its OpenMP threads; a CUDA rank's host thread only drives
  // its GPU.
  warn_about_placement(o.device == "cpu" ? omp_get_max_threads() : 1);
  Topology topo = make_mpi_topology(o.tp, o.sp);
  if (o.device == "cpu") return topo;
  const int count = cuda_device_count();
  if (count == 0) throw Error("--device cuda: " + cuda_unavailable_reason());
  const auto [rank, ranks_here] = node_rank_and_size();
  // NCCL refuses two ranks of one communicator on the same GPU (its own message only says
  // "invalid usage"); every multi-rank group of a multi-rank run is an NCCL communicator.
  if (topo.layout.world() > 1 && ranks_here > count)
    throw Error("--device cuda: " + std::to_string(ranks_here) +
                " ranks run on this node but it has " + std::to_string(count) +
                " CUDA device(s); NCCL needs a GPU of its own for each rank, "
                "so start at most " +
                std::to_string(count) + " rank(s) per node");
  return with_device_comms(std::move(topo), Device::cuda, rank % count);
}

SpOrder choose_sp_order(const RunOptions& o, const ModelConfig& cfg, std::string& note) {
  std::string why;
  const bool fits = cfg.zigzag_fits(o.sp, &why);
  if (o.sp_layout == "zigzag") {
    if (!fits) throw Error("--sp-layout zigzag: " + why);
    note = "sp layout zigzag (--sp-layout zigzag)";
    return SpOrder::zigzag;
  }
  if (o.sp_layout == "contiguous") {
    note = "sp layout contiguous (--sp-layout contiguous)";
    return SpOrder::contiguous;
  }
  if (fits) {
    note = "sp layout zigzag (default: every sp rank does the same attention work)";
    return SpOrder::zigzag;
  }
  note = "sp layout contiguous (default; zigzag does not fit: " + why + ")";
  return SpOrder::contiguous;
}

ModelConfig reconcile_with_checkpoint(const RunOptions& o, const CheckpointInfo& info,
                                      bool allow_length_change) {
  RunOptions theirs = o;
  theirs.model = info.config;
  for (const OptionRow& row : option_table()) {
    if (!(row.commands & kTrain)) continue;
    switch (row.from_checkpoint) {
      case FromCheckpoint::no:
        break;
      case FromCheckpoint::run_value:
        copy_value(row, o, theirs);
        break;
      case FromCheckpoint::length:
        if (allow_length_change) {
          if (o.given(row.flag)) copy_value(row, o, theirs);
          break;
        }
        [[fallthrough]];
      case FromCheckpoint::must_agree:
        if (o.given(row.flag) && !same_value(row, o, theirs))
          throw Error("--" + std::string(row.flag) + " " + show(row, o) + " differs from " +
                      show(row, theirs) + " in checkpoint " + info.path +
                      " (the model's hyperparameters come from the checkpoint)");
        break;
    }
  }
  return theirs.model;
}

}  // namespace tls
