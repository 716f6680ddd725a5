// What every command does before any work: the process grid, the backend, the precision, and
// the model's hyperparameters reconciled with a checkpoint's (docs/DESIGN.md sections 4 and 6).
#pragma once

#include <memory>
#include <string>

#include "checkpoint/checkpoint_reader.h"
#include "kernels/ops.h"
#include "parallel/topology.h"
#include "runtime/options.h"

namespace tls {

// The dtype of the parameters, optimizer state and activations: float64 for fp64, float32 for
// fp32 and bf16 (bf16 is a GEMM mode over float32 tensors, see gemm_inputs_of).
DType dtype_of_precision(const std::string& precision);
// What the run's GEMMs do with float32 operands (--precision bf16, --allow-tf32).
GemmInputs gemm_inputs_of(const RunOptions& o);
// The node-local rank, for choosing a GPU.
int local_rank();
// The --device backend, its GEMMs set to gemm_inputs_of(o).
std::unique_ptr<Ops> make_backend(const RunOptions& o);
// The grid of --tp/--sp over MPI, with NCCL for the groups' device tensors under --device cuda;
// first, each node's ranks check their CPU placement (runtime/placement_check.h).
Topology make_run_topology(const RunOptions& o);

// The sp layout of a run (docs/DESIGN.md section 3): --sp-layout, and by default (auto) zigzag
// where its half-slice rules hold. `note` gets the one start-up line saying which layout runs
// and why. An explicit --sp-layout zigzag that does not fit is a one-line error.
SpOrder choose_sp_order(const RunOptions& o, const ModelConfig& cfg, std::string& note);

// The model of a run that starts from checkpoint `info`: its hyperparameters, except
// tokens_per_sample and mem_len when allow_length_change and the user gave them, and dropout
// (a training setting, always the run's). A model flag the user gave explicitly must agree.
// Each model flag's row in runtime/option_table.h says which of these it is.
ModelConfig reconcile_with_checkpoint(const RunOptions& o, const CheckpointInfo& info,
                                      bool allow_length_change);

}  // namespace tls
