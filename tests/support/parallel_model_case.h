// The parallel-layout check of docs/DESIGN.md section 3, shared by the multi-rank model suites
// (tests/parallel/parallel_model_mpi_test.cpp on the CPU backend,
// tests/parallel/cuda_parallel_model_mpi_test.cpp on CUDA): for every layout (tp, sp, dp) that
// fits the world size, the loss, every parameter gradient and the parameters after the AdamW
// steps (Scenario::updates) equal a single-process run on the CPU backend, on every rank.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "kernels/ops.h"
#include "parallel/topology.h"
#include "layers/model_config.h"

namespace tls::testing {

struct Scenario {
  std::string name;
  ModelConfig cfg;
  int64_t batch = 2, n_blocks = 2;
  std::vector<int32_t> tokens;  // [batch, n_blocks * T + 1]
  std::string golden;           // weights from this golden file, else random init
  bool checkpointing = false;   // --activation-checkpointing (recompute in the backward)
  int64_t recompute_piece = 0;  // its pieces (tokens; 0: automatic)
  int64_t updates = 5;          // AdamW steps after the per-block gradients
};

// The model, batch and tokens of a golden file (tests/golden/), with its weights.
Scenario golden_scenario(const std::string& file);
// A 2-layer random model (d 32, 4 heads, T = M = 32, w 8, c 4, r 2, batch 4, 2 blocks):
// post-LN with ReLU, biases and both clamps, or pre-LN with GELU; dropout and emb_dropout as
// given.
Scenario random_scenario(bool post_ln, double dropout);

// Inputs and targets of `block` for batch rows [b0, b0 + nb) and positions [t0, t0 + nt).
std::pair<Tensor, Tensor> slice(Ops& ops, const Scenario& s, int64_t block, int64_t b0, int64_t nb,
                                int64_t t0, int64_t nt);

struct Run {
  std::vector<double> losses;  // per block (mean NLL), then per step
  std::map<std::string, std::vector<std::vector<double>>> grads;  // per block, this rank's shard
  std::map<std::string, std::vector<double>> params_after;        // after the AdamW steps
};

// Runs the blocks (gradients per block), then s.updates training steps, on the given topology,
// with the backend of `device`: Device::cpu is the CPU backend over topo's communicators as they
// are; Device::cuda is the CUDA backend on this rank's device (node-local rank modulo the device
// count: 0 with one device) with topo's multi-process groups moved to NCCL (with_device_comms;
// one-process groups stay as they are). Values of sharded tensors are this rank's hyperslab.
Run run(const Scenario& s, DType dtype, Topology topo,
        const std::map<std::string, std::vector<double>>& weights, Device device);

// Every parameter's full value in float64: the golden file's weights, or a seeded random
// initialisation with noise added to every tensor (non-trivial norms and biases).
std::map<std::string, std::vector<double>> full_weights(const Scenario& s);

// Whether the model and batch can be split as (tp, sp, dp).
bool layout_fits(const ModelConfig& cfg, int64_t batch, int tp, int sp, int dp);

// For every layout of MPI_COMM_WORLD (tp and sp powers of two) that fits the scenario, runs it
// on `device` (run()) and checks the losses (relative), the gradients (relative to the block's
// largest gradient) and the parameters after the AdamW steps (relative_error; 10 * tol in
// float32, without dconv_1.bias) against one process on the CPU backend within tol. Fails when
// no layout fits.
void compare(const Scenario& s, DType dtype, double tol, Device device);

}  // namespace tls::testing
