#include "layers/pass_context.h"

#include <algorithm>

namespace tls {

void PassContext::drop(Ops& ops, Tensor& x, double p, uint64_t tensor_id, int64_t tokens,
                       int64_t cols_global, int64_t col_offset) const {
  if (segments.empty()) {
    ops.dropout_apply(x, p, key(tensor_id, tokens, cols_global, col_offset));
    return;
  }
  for (const Segment& seg : segments) {
    PassContext run = *this;
    run.segments.clear();
    run.t_offset = seg.t0;
    Tensor part = ops.empty({x.dim(0), seg.n, x.dim(2)}, x.dtype());
    ops.copy_rows(part, 0, x, seg.row0, seg.n);
    ops.dropout_apply(part, p, run.key(tensor_id, seg.n, cols_global, col_offset));
    ops.copy_rows(x, seg.row0, part, 0, seg.n);
  }
}

PassContext PassContext::rows(int64_t t0, int64_t n, int64_t tokens) const {
  PassContext out = *this;
  if (out.t_global == 0) {
    out.t_global = tokens;
    out.t_offset = 0;
  }
  if (segments.empty()) {
    out.t_offset += t0;
    return out;
  }
  out.segments.clear();
  for (const Segment& seg : segments) {
    const int64_t lo = std::max(t0, seg.row0), hi = std::min(t0 + n, seg.row0 + seg.n);
    if (lo < hi) out.segments.push_back({lo - t0, seg.t0 + (lo - seg.row0), hi - lo});
  }
  if (out.segments.size() == 1) {
    out.t_offset = out.segments[0].t0;
    out.segments.clear();
  }
  return out;
}

}  // namespace tls
