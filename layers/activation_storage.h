// Saved activations in a narrower storage dtype (bfloat16 under --precision bf16, docs/DESIGN.md
// "Precision"). The forward computes every layer in float32 and, once a layer is done, keeps
// what its backward needs in the storage dtype; the backward turns one layer's saved tensors back
// into float32 for the duration of that layer's backward. So what lives across the pass is half
// the size, and only one layer's float32 activations exist at a time. Statistics (LayerNorm's
// mean and rstd, the attention's log-sum-exp), the positional tables, the carried caches and
// the log-probabilities (the loss) stay float32.
#pragma once

#include <vector>

#include "layers/transformer_layer.h"

namespace tls {

// The saved tensors of one layer that grow with the block's rows: those a storage dtype applies
// to (undefined ones included; they are skipped).
std::vector<Tensor*> stored_activations(TransformerLayerSaved& saved);

// Replaces each float32 tensor with a copy in `storage`, one copy per distinct byte range, so
// tensors that shared their bytes still do; tensors whose bytes are those of a tensor in `keep`
// (held in float32 elsewhere anyway) stay as they are. Each float32 tensor is freed as soon as
// its last holder is replaced, so converting costs one tensor's room at a time.
void store_as(Ops& ops, const std::vector<Tensor*>& tensors, DType storage,
              const std::vector<Tensor>& keep = {});

// Replaces each bfloat16 tensor with a float32 copy (one per byte range; each bfloat16 tensor is
// freed once replaced) and returns those it replaced, for store_as to narrow again afterwards:
// exactly, since they hold bfloat16 values.
std::vector<Tensor*> widen_to_float32(Ops& ops, const std::vector<Tensor*>& tensors);

}  // namespace tls
