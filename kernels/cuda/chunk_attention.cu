// The long-range (compressed) part of LS attention on the GPU (docs/DESIGN.md section 1.1), as a
// policy of the fused tile kernels in attention_tile.cuh. Query t lies in global chunk
// g = first_query_chunk + t / c and sees the slots j < min(g r, n_slots) of khat/vhat
// [B, n_slots, dl]; its score is
//   q_t . (khat[j] + pos[min(g r - 1 - j, n_pos - 1)])
// (no biases). A query that sees no slot gets lse = -inf and a zero output. All slots whose id
// is clamped to the last row of pos share it: j_range returns them as one range. khat may end
// before g r (one sequence-parallel rank's slot group): key_end stops at n_slots, and the slots
// past it that pos_keys / j_range may name are cut by their callers (key_end, the key tile).
#include "kernels/cuda/attention_tile.cuh"
#include "kernels/cuda/attention_wmma.cuh"
#include "kernels/cuda/cuda_ops.h"

namespace tls {

namespace {

struct ChunkPolicy {
  int64_t first_chunk = 0, c = 1, r = 1, n_slots = 0, n_pos = 1;
  __device__ int64_t limit(int64_t t) const {
    const int64_t v = (first_chunk + t / c) * r;
    return v < 0 ? 0 : (v > n_slots ? n_slots : v);
  }
  __device__ int64_t key_begin(int64_t) const { return 0; }
  __device__ int64_t key_end(int64_t t) const { return limit(t); }
  __device__ bool visible(int64_t t, int64_t j) const { return j < limit(t); }
  __device__ int64_t pidx(int64_t t, int64_t j) const {
    const int64_t id = (first_chunk + t / c) * r - 1 - j;
    return id < n_pos - 1 ? id : n_pos - 1;
  }
  __device__ void j_range(int64_t t, int64_t prow, int64_t& lo, int64_t& hi) const {
    const int64_t top = (first_chunk + t / c) * r - 1;
    if (prow < n_pos - 1) {
      lo = hi = top - prow;
    } else {
      lo = 0;
      hi = top - (n_pos - 1);
    }
  }
  // Queries [tb, te) that see a key of [j0, j1] (slot j0 from its chunk's first query on);
  // keys [jb, je) whose row lies in [p0, p1] for a query of [t0, t1] (the clamped last row:
  // every slot from 0).
  __device__ void query_range(int64_t j0, int64_t, int64_t tokens, int64_t& tb, int64_t& te) const {
    tb = min(tokens, max(int64_t{0}, (j0 / r + 1 - first_chunk) * c));
    te = tokens;
  }
  __device__ void pos_keys(int64_t t0, int64_t t1, int64_t p0, int64_t p1, int64_t& jb,
                           int64_t& je) const {
    jb = p1 >= n_pos - 1 ? 0 : (first_chunk + t0 / c) * r - 1 - p1;
    je = (first_chunk + t1 / c) * r - p0;
  }
  // Rows a qt x kt tile can touch: kt keys plus r per further query chunk in the tile (a tile
  // not aligned to chunks reaches one chunk more).
  int max_span(int qt, int kt) const {
    return static_cast<int>(std::min<int64_t>(n_pos, ((qt + c - 2) / c + 1) * r + kt));
  }
};

void check_chunk(const Tensor& q, const Tensor& khat, const Tensor& vhat, const Tensor& pos,
                 const AttentionShape& s) {
  const char* op = "chunk_attention";
  const int64_t dl = s.n_head * s.d_head;
  cuda::check_float(op, "q", q);
  if (q.shape() != std::vector<int64_t>{s.batch, s.tokens, dl})
    cuda::fail(op, "q has shape " + q.shape_string());
  cuda::check_like(op, "q", q, "khat", khat);
  cuda::check_like(op, "q", q, "vhat", vhat);
  cuda::check_like(op, "q", q, "pos", pos);
  if (khat.rank() != 3 || khat.dim(0) != s.batch || khat.dim(2) != dl || !vhat.same_shape(khat))
    cuda::fail(op, "khat " + khat.shape_string() + " / vhat " + vhat.shape_string() +
                       " do not match q " + q.shape_string());
  if (pos.rank() != 2 || pos.dim(1) != dl || pos.dim(0) < 1)
    cuda::fail(op, "pos has shape " + pos.shape_string());
  if (s.chunk_size <= 0 || s.chunk_rank <= 0 || s.tokens % s.chunk_size != 0)
    cuda::fail(op, "tokens must be a multiple of the chunk size");
}

ChunkPolicy policy_of(const AttentionShape& s, const Tensor& khat, const Tensor& pos) {
  return ChunkPolicy{s.first_query_chunk, s.chunk_size, s.chunk_rank, khat.dim(1), pos.dim(0)};
}

}  // namespace

void CudaOps::chunk_attention_forward(Tensor& out, Tensor& lse, const Tensor& q, const Tensor& khat,
                                      const Tensor& vhat, const Tensor& pos,
                                      const AttentionShape& s) {
  check_chunk(q, khat, vhat, pos, s);
  cuda::check_same("chunk_attention_forward", "q", q, "out", out);
  cuda::check_like("chunk_attention_forward", "q", q, "lse", lse);
  cuda::check_numel("chunk_attention_forward", "lse", lse, s.batch * s.n_head * s.tokens);
  activate();
  cuda::dispatch_float("chunk_attention_forward", q.dtype(), [&](auto tag) {
    using T = decltype(tag);
    cuda::AttnArgs<T> a;
    a.q = q.data<T>();
    a.k = khat.data<T>();
    a.v = vhat.data<T>();
    a.pos = pos.data<T>();
    a.out = out.data<T>();
    a.lse = lse.data<T>();
    a.tokens = s.tokens;
    a.n_head = s.n_head;
    a.dh = s.d_head;
    a.key_rows = khat.dim(1);
    const ChunkPolicy pol = policy_of(s, khat, pos);
    cuda::run_attention("chunk_attention_forward", false, gemm_inputs_, a, pol, s.batch,
                        smem_optin_, stream_);
  });
}

void CudaOps::chunk_attention_backward(Tensor& dq, Tensor& dkhat, Tensor& dvhat, Tensor& dpos,
                                       const Tensor& dout, const Tensor& lse, const Tensor& delta,
                                       const Tensor& q, const Tensor& khat, const Tensor& vhat,
                                       const Tensor& pos, const AttentionShape& s) {
  check_chunk(q, khat, vhat, pos, s);
  const char* op = "chunk_attention_backward";
  cuda::check_same(op, "q", q, "dout", dout);
  cuda::check_like(op, "q", q, "lse", lse);
  cuda::check_like(op, "q", q, "delta", delta);
  cuda::check_numel(op, "lse", lse, s.batch * s.n_head * s.tokens);
  cuda::check_numel(op, "delta", delta, s.batch * s.n_head * s.tokens);
  if (dq.defined()) cuda::check_same(op, "q", q, "dq", dq);
  if (dkhat.defined()) cuda::check_same(op, "khat", khat, "dkhat", dkhat);
  if (dvhat.defined()) cuda::check_same(op, "vhat", vhat, "dvhat", dvhat);
  if (dpos.defined()) cuda::check_same(op, "pos", pos, "dpos", dpos);
  activate();
  cuda::dispatch_float(op, q.dtype(), [&](auto tag) {
    using T = decltype(tag);
    cuda::AttnArgs<T> a;
    a.q = q.data<T>();
    a.k = khat.data<T>();
    a.v = vhat.data<T>();
    a.pos = pos.data<T>();
    a.dout = dout.data<T>();
    a.lse_in = lse.data<T>();
    a.delta = delta.data<T>();
    a.dq = cuda::ptr_or_null<T>(dq);
    a.dk = cuda::ptr_or_null<T>(dkhat);
    a.dv = cuda::ptr_or_null<T>(dvhat);
    a.dpos = cuda::ptr_or_null<T>(dpos);
    a.tokens = s.tokens;
    a.n_head = s.n_head;
    a.dh = s.d_head;
    a.key_rows = khat.dim(1);
    const ChunkPolicy pol = policy_of(s, khat, pos);
    cuda::run_attention(op, true, gemm_inputs_, a, pol, s.batch, smem_optin_, stream_);
  });
}

}  // namespace tls
