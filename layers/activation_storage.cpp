#include "layers/activation_storage.h"

#include <map>

namespace tls {
namespace {

// A tensor's bytes: tensors with the same range share one converted copy (seen in their shapes).
using ByteRange = std::pair<const void*, size_t>;
ByteRange range_of(const Tensor& t) { return {t.raw(), t.bytes()}; }

// Replaces each tensor of dtype `from` with a copy in `to`, one per byte range.
template <class Skip>
void convert_all(Ops& ops, const std::vector<Tensor*>& tensors, DType from, DType to, Skip skip) {
  std::map<ByteRange, Tensor> copies;
  for (Tensor* t : tensors) {
    if (!t->defined() || t->dtype() != from || skip(*t)) continue;
    Tensor& copy = copies[range_of(*t)];
    if (!copy.defined()) {
      copy = ops.empty(t->shape(), to);
      ops.copy(copy, *t);
    }
    *t = copy.view(t->shape());
  }
}

}  // namespace

std::vector<Tensor*> stored_activations(TransformerLayerSaved& sv) {
  LayerPieceSaved& p = sv.piece;
  PieceActivations& a = sv.attn.kept;
  LSAttentionSlots& s = sv.attn.slots;
  std::vector<Tensor*> out = {&sv.x,
                              &sv.cache,
                              &sv.h2,
                              &sv.x_normed,
                              &sv.cache_normed,
                              &p.h1,
                              &p.h2,
                              &p.h3,
                              &p.post_ffn_in,
                              &p.ffn.pre_act,
                              &p.ffn.act,
                              &a.h,
                              &a.q,
                              &a.keys,
                              &a.values,
                              &a.attn,
                              &s.cache_weights,
                              &s.block_weights,
                              &s.cache_compressed,
                              &s.khat_raw,
                              &s.vhat_raw,
                              &s.khat,
                              &s.vhat};
  // Each query run's window tensors (a run that is the whole piece shares the piece's bytes,
  // converted once).
  for (QueryRun& run : a.runs)
    for (Tensor* t :
         {&run.q, &run.keys_raw, &run.values_raw, &run.keys_win, &run.values_win, &run.attn})
      out.push_back(t);
  return out;
}

void store_as(Ops& ops, const std::vector<Tensor*>& tensors, DType storage,
              const std::vector<Tensor>& keep) {
  if (storage == DType::f32) return;
  auto kept = [&](const Tensor& t) {
    for (const Tensor& k : keep)
      if (k.defined() && range_of(k) == range_of(t)) return true;
    return false;
  };
  convert_all(ops, tensors, DType::f32, storage, kept);
}

std::vector<Tensor*> widen_to_float32(Ops& ops, const std::vector<Tensor*>& tensors) {
  std::vector<Tensor*> widened;
  for (Tensor* t : tensors)
    if (t->defined() && t->dtype() == DType::bf16) widened.push_back(t);
  convert_all(ops, widened, DType::bf16, DType::f32, [](const Tensor&) { return false; });
  return widened;
}

}  // namespace tls
