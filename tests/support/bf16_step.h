// Training steps for the bf16-activation tests (tests/layers/*bf16_activations_test.cpp): a
// model whose GEMMs take bf16 operands (and so keeps its activations in bfloat16) or an exact
// float32 one, and the peak tensor memory of its steps.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "layers/model.h"

namespace tls::testing {

// Runs `steps` training steps (forward, backward, AdamW) of cfg on ops with batch 2 and fixed
// tokens, dropout on; returns the losses; params (when given) receives every parameter after
// them. `memory` (when given) is called around the steps: memory(true) before, memory(false)
// after, so a caller can reset and read a peak.
std::vector<double> bf16_test_steps(Ops& ops, const ModelConfig& cfg, int steps, bool checkpointing,
                                    std::vector<double>* params = nullptr,
                                    const std::function<void(bool before)>& memory = {});

}  // namespace tls::testing
