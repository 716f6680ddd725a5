// Long-short attention (the reference's ChunkedLSAttention), DESIGN.md sections 1 and 1.1.
//
// For a block h [B, T, d] and its cache C [B, M, d] (both already normed in the pre-LN model):
//   q  = (h Wq^T) / sqrt(d_h)
//   window:  Kw, Vw = LN_win([C_{M-w..M-1} ; h] Wk^T / Wv^T), R = r_net(PE(delta))
//   compressed: p = chunk-softmax(x Wd^T + bd) over the c rows of each chunk;
//     cache chunks compress-then-project: K^ = LN_dproj((sum p C) Wk^T)
//     block chunks project-then-compress: K^ = LN_dproj(sum p (h Wk^T))
//     P = r_net_chunk(PE(id)), id = (g_q - g) r - 1 - k clamped by cpos_clamp_len
//   one softmax over [compressed ; window] scores, out = proj_out(sum p V)
// Each part runs as its own kernel (kernels/ops.h) and the parts are merged by their
// log-sum-exp, so no T x T matrix or dense mask ever exists.
#pragma once

#include "layers/layernorm.h"
#include "layers/linear.h"
#include "runtime/config.h"

namespace tls {

// Positional tables shared by every layer of one pass (computed once by the model).
struct PositionTables {
  Tensor window;  // [w, d]: PE(min(delta, clamp_len)) for delta = 0..w-1 (dropout applied)
  Tensor chunk;   // [n_pos, d]: PE(min(id, cpos_clamp_len)) for id = 0..n_pos-1
};

struct LSAttentionSaved {
  Tensor q, keys_block, values_block;        // [B, T, d]: scaled queries, h Wk^T, h Wv^T
  Tensor cache_tail;                         // [B, w, d]: C_{M-w..M-1}
  Tensor keys_raw, values_raw;               // [B, w + T, d] before LN_win
  Tensor keys_win, values_win;               // after LN_win
  LayerNormSaved keys_win_ln, values_win_ln;
  Tensor cache_weights, block_weights;       // chunk-softmax weights [B, M | T, H r]
  Tensor cache_compressed;                   // [B, M/c r, d]: sum p C (heads merged)
  Tensor khat_raw, vhat_raw;                 // [B, S, d] before LN_dproj
  Tensor khat, vhat;                         // after LN_dproj
  LayerNormSaved khat_ln, vhat_ln;
  Tensor rel_window, rel_chunk;              // r_net(PE window), r_net_chunk(PE chunk)
  Tensor attn, lse;                          // merged output [B, T, d] and lse [B, H, T]
};

class LSAttention {
 public:
  void init(Ops& ops, const std::string& name, const ModelConfig& cfg, DType dtype);
  // h: [B, T, d], cache: [B, M, d] -> out: [B, T, d] (before the attention dropout).
  void forward(Ops& ops, const Tensor& h, const Tensor& cache, const PositionTables& pos,
               Tensor& out, LSAttentionSaved& saved) const;
  // dh accumulates; dcache (may be undefined) accumulates the gradient reaching the cache rows,
  // which the pre-LN layer needs for norm1's parameters.
  void backward(Ops& ops, const Tensor& dout, const Tensor& h, const Tensor& cache,
                const PositionTables& pos, const LSAttentionSaved& saved, Tensor& dh,
                Tensor& dcache);

  AttentionShape shape(int64_t batch) const;

  Linear proj_query, proj_key, proj_val, proj_out, r_net, r_net_chunk, dconv_1;
  Parameter r_w_bias, r_r_bias;  // [d] locally, [1,H,1,1,d_h] / [1,H,1,d_h] in the checkpoint
  LayerNorm dual_ln_win, dual_ln_dproj;

 private:
  ModelConfig cfg_;
};

}  // namespace tls
