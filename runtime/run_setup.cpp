#include "runtime/run_setup.h"

#include <mpi.h>

#include <algorithm>

#include "kernels/device.h"
#include "parallel/device_topology.h"
#include "parallel/mpi_comm.h"
#include "kernels/error.h"

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

ModelConfig reconcile_with_checkpoint(const RunOptions& o, const CheckpointInfo& info,
                                      bool allow_length_change) {
  ModelConfig cfg = info.config;
  const ModelConfig& given = o.model;
  auto is_given = [&](const std::string& flag) {
    return std::find(o.model_flags_given.begin(), o.model_flags_given.end(), flag) !=
           o.model_flags_given.end();
  };
  auto agree = [&](const char* flag, int64_t mine, int64_t theirs) {
    if (is_given(flag) && mine != theirs)
      throw Error("--" + std::string(flag) + " " + std::to_string(mine) + " differs from " +
                  std::to_string(theirs) + " in checkpoint " + info.path +
                  " (the model's hyperparameters come from the checkpoint)");
  };
  agree("n-layer", given.n_layer, cfg.n_layer);
  agree("d-model", given.d_model, cfg.d_model);
  agree("n-head", given.n_head, cfg.n_head);
  agree("d-inner", given.d_inner, cfg.d_inner);
  agree("chunk-size", given.chunk_size, cfg.chunk_size);
  agree("chunk-rank", given.chunk_rank, cfg.chunk_rank);
  agree("window-len", given.window_len, cfg.window_len);
  agree("pre-ln", given.pre_ln, cfg.pre_ln);
  agree("use-gelu", given.use_gelu, cfg.use_gelu);
  agree("use-bias", given.use_bias, cfg.use_bias);
  agree("clamp-len", given.clamp_len, cfg.clamp_len);
  agree("cpos-clamp-len", given.cpos_clamp_len, cfg.cpos_clamp_len);
  if (allow_length_change) {
    if (is_given("tokens-per-sample")) cfg.tokens_per_sample = given.tokens_per_sample;
    if (is_given("mem-len")) cfg.mem_len = given.mem_len;
  } else {
    agree("tokens-per-sample", given.tokens_per_sample, cfg.tokens_per_sample);
    agree("mem-len", given.mem_len, cfg.mem_len);
  }
  cfg.dropout = given.dropout;
  cfg.emb_dropout = given.emb_dropout;
  return cfg;
}

}  // namespace tls
