// Initial weights as the reference's TransformerLSModel._init_weights sets them: every linear
// weight, the embedding and r_w_bias / r_r_bias ~ normal(0, 0.02); LayerNorm weights ~
// normal(1, 0.02); biases 0. Values come from the counter-based generator keyed by (seed, the
// parameter's name, the element's index in the whole tensor), so any layout gets the same model.
#pragma once

#include <cstdint>

#include "layers/model.h"

namespace tls {

inline constexpr double kInitStd = 0.02;

void initialize_parameters(Ops& ops, TransformerLSModel& model, uint64_t seed);

}  // namespace tls
