// Ops: the one seam where arithmetic runs. Layers call these and never ask which device or
// element type they run on; the CPU implementation (kernels/cpu) is the reference every other
// backend is tested against.
//
// Conventions (every implementation keeps them):
// - Tensors are contiguous, row-major. "Rows" means the tensor seen as [matrix_rows, last dim].
// - All tensors of one call share one dtype (float32 or float64); token ids are int32; bfloat16
//   (a storage type) is taken only by copy (to and from float32), copy_rows and host transfers.
// - Forward ops OVERWRITE their outputs. Backward ops ACCUMULATE (+=) into every gradient they
//   produce, so a tensor used in two places simply receives both contributions; callers zero
//   gradients once per step.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "kernels/tensor.h"

namespace tls {

// Where a dropout mask comes from: a counter-based generator keyed by (seed, step, tensor id,
// global element index), so the mask is the same for every parallel layout. The element at
// local row i = b * t_local + t, column j of a [b_local * t_local, cols] tensor has the global
// index ((b + b_offset) * t_global + (t + t_offset)) * cols_global + col_offset + j (a tensor
// whose columns are split over tensor-parallel ranks sets cols_global and col_offset).
struct DropoutKey {
  uint64_t seed = 0;
  uint64_t step = 0;
  uint64_t tensor_id = 0;
  int64_t t_local = 1;      // rows per batch row held locally
  int64_t t_global = 1;     // rows per batch row in the whole sequence
  int64_t t_offset = 0;     // first local row's position in the whole sequence
  int64_t b_offset = 0;     // first local batch row's global index
  int64_t cols_global = 0;  // 0: the local column count
  int64_t col_offset = 0;
};

// Geometry of one attention call (one layer, local heads only). Activations are [B, T, dl] with
// dl = n_head * d_head (the heads this rank holds); per-head statistics are [B, n_head, T].
struct AttentionShape {
  int64_t batch = 0;
  int64_t tokens = 0;  // T: query rows
  int64_t n_head = 0;  // local heads
  int64_t d_head = 0;
  int64_t window = 0;             // w: a query sees the w keys t-w+1 .. t
  int64_t chunk_size = 0;         // c
  int64_t chunk_rank = 0;         // r
  int64_t first_query_chunk = 0;  // global chunk index of query row 0 (M/c for one process)
};

// What GEMMs do with float32 operands: the mixed-precision modes. C, the accumulation and every
// other op stay float32, and so do the parameters and the optimizer state; float64 GEMMs are
// always exact.
//   exact: float32 x float32 (the default, and what the tests compare against).
//   tf32:  operands rounded to TF32 (10-bit mantissa) on tensor cores: --allow-tf32, CUDA only.
//   bf16:  operands rounded to bfloat16 (8-bit mantissa), float32 accumulation: --precision bf16.
//          A float32 model also stores its saved activations in bfloat16 in this mode
//          (TransformerLSModel::activation_storage, layers/activation_storage.h).
enum class GemmInputs { exact, tf32, bf16 };
const char* to_string(GemmInputs mode);

class Ops {
 public:
  virtual ~Ops() = default;
  virtual Device device() const = 0;

  // ---- memory --------------------------------------------------------------------------------
  virtual Tensor empty(const std::vector<int64_t>& shape, DType dtype) = 0;
  virtual Tensor zeros(const std::vector<int64_t>& shape, DType dtype) = 0;
  virtual void fill(Tensor& x, double value) = 0;
  virtual void copy(Tensor& dst, const Tensor& src) = 0;  // same numel, dtypes may differ
  // dst[b, dst_row0 + i, :] = src[b, src_row0 + i, :] for i < n_rows (3-D tensors [B, N, cols]).
  virtual void copy_rows(Tensor& dst, int64_t dst_row0, const Tensor& src, int64_t src_row0,
                         int64_t n_rows) = 0;
  // dst[b, dst_row0 + i, :] += src[b, src_row0 + i, :]: the backward of copy_rows.
  virtual void add_rows(Tensor& dst, int64_t dst_row0, const Tensor& src, int64_t src_row0,
                        int64_t n_rows) = 0;
  // Host transfers (for tests, checkpoints and logging): values converted to/from double.
  virtual std::vector<double> to_host(const Tensor& x) = 0;
  virtual void from_host(Tensor& x, const std::vector<double>& values) = 0;
  // x's bytes as stored (its own dtype) into host memory at dst: a checkpoint's snapshot, with
  // no conversion and, into memory pin_host has locked, at the bus's speed. Returns once dst
  // holds them. The default converts through to_host.
  virtual void copy_to_host_bytes(const Tensor& x, void* dst);
  // Page-locks `bytes` of host memory at p so device transfers to it run at the bus's speed.
  // Returns what must release it before the memory is freed, or nullptr when nothing was done
  // (a host backend, or the driver refused: the memory stays pageable and still works).
  using HostUnpin = void (*)(void* p);
  virtual HostUnpin pin_host(void* p, size_t bytes);

  // ---- elementwise and reductions -----------------------------------------------------------
  virtual void scale(Tensor& x, double alpha) = 0;                  // x *= alpha
  virtual void axpy(double alpha, const Tensor& x, Tensor& y) = 0;  // y += alpha * x
  virtual void add_bias(Tensor& y, const Tensor& bias) = 0;         // y[i, :] += bias
  virtual void sum_rows(const Tensor& dy, Tensor& dbias) = 0;       // dbias += sum_i dy[i, :]
  virtual double sum_squares(const Tensor& x) = 0;                  // in double
  virtual double sum(const Tensor& x) = 0;                          // in double
  virtual bool all_finite(const Tensor& x) = 0;

  // ---- GEMM: C = alpha * op(A) op(B) + beta * C on 2-D views (matrix_rows x matrix_cols) -----
  virtual void gemm(bool trans_a, bool trans_b, double alpha, const Tensor& a, const Tensor& b,
                    double beta, Tensor& c) = 0;
  // How later float32 GEMMs treat their operands; throws tls::Error for a mode this backend
  // cannot run (the CPU backend has no tf32; its bf16 rounds copies of the operands).
  virtual void set_gemm_inputs(GemmInputs mode) = 0;
  virtual GemmInputs gemm_inputs() const = 0;

  // ---- normalisation and activations --------------------------------------------------------
  // Per row: out = (x - mean) * rstd * gamma + beta, eps inside the sqrt, biased variance.
  virtual void layernorm_forward(Tensor& out, Tensor& mean, Tensor& rstd, const Tensor& x,
                                 const Tensor& gamma, const Tensor& beta, double eps) = 0;
  // dx, dgamma, dbeta accumulate; dx may be an undefined Tensor when not wanted.
  virtual void layernorm_backward(Tensor& dx, Tensor& dgamma, Tensor& dbeta, const Tensor& dout,
                                  const Tensor& x, const Tensor& gamma, const Tensor& mean,
                                  const Tensor& rstd) = 0;
  // LayerNorm over features split across ranks (tensor parallel): the caller all-reduces the
  // per-row partial sums between the steps. Forward: mean = allreduce(row_sum(x)) / n, then
  // sq = allreduce(row_sum((x - mean)^2)), then layernorm_normalize. Backward:
  // sums = allreduce(layernorm_backward_sums(...)), then layernorm_backward_apply.
  // sums[i] += sum_j (x[i, j] - center[i])^p, p = 2 if square else 1; center may be undefined.
  virtual void row_sum(Tensor& sums, const Tensor& x, const Tensor& center, bool square) = 0;
  // rstd = 1 / sqrt(sq_sum / n + eps); out = (x - mean) * rstd * gamma + beta.
  virtual void layernorm_normalize(Tensor& out, Tensor& rstd, const Tensor& x, const Tensor& mean,
                                   const Tensor& sq_sum, const Tensor& gamma, const Tensor& beta,
                                   int64_t n_features, double eps) = 0;
  // sums [rows, 2] += (sum_j g, sum_j g * xhat) with g = dout * gamma, xhat = (x - mean) * rstd.
  virtual void layernorm_backward_sums(Tensor& sums, const Tensor& dout, const Tensor& x,
                                       const Tensor& gamma, const Tensor& mean,
                                       const Tensor& rstd) = 0;
  // dx += rstd (g - sums0 / n - xhat sums1 / n); dgamma += sum_i dout xhat; dbeta += sum_i dout.
  virtual void layernorm_backward_apply(Tensor& dx, Tensor& dgamma, Tensor& dbeta,
                                        const Tensor& dout, const Tensor& x, const Tensor& gamma,
                                        const Tensor& mean, const Tensor& rstd, const Tensor& sums,
                                        int64_t n_features) = 0;
  virtual void gelu_forward(Tensor& out, const Tensor& x) = 0;  // erf form
  virtual void gelu_backward(Tensor& dx, const Tensor& dout, const Tensor& x) = 0;
  virtual void relu_forward(Tensor& out, const Tensor& x) = 0;
  virtual void relu_backward(Tensor& dx, const Tensor& dout, const Tensor& x) = 0;

  // ---- softmax family -----------------------------------------------------------------------
  virtual void softmax_forward(Tensor& out, const Tensor& x) = 0;  // per row
  virtual void softmax_backward(Tensor& dx, const Tensor& dout, const Tensor& out) = 0;
  virtual void log_softmax_forward(Tensor& out, const Tensor& x) = 0;  // per row
  // losses[i] = -logprobs[i, targets[i]]; rows whose target is < 0 are skipped (loss 0).
  virtual void nll_forward(Tensor& losses, const Tensor& logprobs, const Tensor& targets) = 0;
  // dlogits[i, :] += scale * (exp(logprobs[i, :]) - onehot(targets[i])); skipped rows get 0.
  virtual void log_softmax_nll_backward(Tensor& dlogits, const Tensor& logprobs,
                                        const Tensor& targets, double scale) = 0;
  // Softmax over the chunk_size consecutive rows of each chunk, separately for every column:
  // x, out are [B, N, cols] with N a multiple of chunk_size (dynamic-projection weights).
  virtual void chunk_softmax_forward(Tensor& out, const Tensor& x, int64_t chunk_size) = 0;
  virtual void chunk_softmax_backward(Tensor& dx, const Tensor& dout, const Tensor& out,
                                      int64_t chunk_size) = 0;

  // ---- embedding ----------------------------------------------------------------------------
  // out[i, :] = table[tokens[i], :] * scale.
  virtual void embedding_forward(Tensor& out, const Tensor& table, const Tensor& tokens,
                                 double scale) = 0;
  virtual void embedding_backward(Tensor& dtable, const Tensor& dout, const Tensor& tokens,
                                  double scale) = 0;

  // ---- dropout (training only) --------------------------------------------------------------
  // x *= mask / (1 - p), mask drawn from key; backward applies the same mask to the gradient.
  virtual void dropout_apply(Tensor& x, double p, const DropoutKey& key) = 0;

  // ---- positional encodings -----------------------------------------------------------------
  // out[i, :] = [sin(pos_i f_0) .. sin(pos_i f_{d/2-1}), cos(pos_i f_0) .. cos(...)],
  // f_j = 10000^(-2j/d), d = out's last dimension.
  virtual void sinusoid_forward(Tensor& out, const std::vector<double>& positions) = 0;

  // ---- dynamic-projection compression -------------------------------------------------------
  // out[b, g*r + k, h*dh + e] = sum_{i<c} weights[b, g*c + i, (h0 + h)*r + k] * x[b, g*c + i, h*dh
  // + e] x: [B, G*c, H*dh], weights: [B, G*c, H_all*r] (every head's columns; h0 = head_offset),
  // out: [B, G*r, H*dh].
  virtual void compress_chunks_forward(Tensor& out, const Tensor& x, const Tensor& weights,
                                       int64_t chunk_size, int64_t chunk_rank, int64_t n_head,
                                       int64_t head_offset) = 0;
  // dx and dweights accumulate; either may be undefined when not wanted.
  virtual void compress_chunks_backward(Tensor& dx, Tensor& dweights, const Tensor& dout,
                                        const Tensor& x, const Tensor& weights, int64_t chunk_size,
                                        int64_t chunk_rank, int64_t n_head,
                                        int64_t head_offset) = 0;

  // ---- the two attention parts --------------------------------------------------------------
  // Both parts share one softmax over [compressed scores ; window scores]. Each part's forward
  // returns its own softmax-normalised output and its log-sum-exp per (b, h, t);
  // attention_merge combines them. The backward of each part needs only the merged lse and
  // delta = rowsum(dout * out) per (b, h, t), so the parts are independent.
  //
  // Window part. q: [B, T, dl] (already divided by sqrt(d_head)); keys, values: [B, w + T, dl]
  // where row j is position t = j - w (rows 0..w-1 are the w positions before the block);
  // rel: [w, dl], rel[delta] is the positional vector at distance delta; r_w_bias, r_r_bias:
  // [dl]. Score of query t for the key delta back:
  //   (q_t + r_w_bias) . keys[t + w - delta] + (q_t + r_r_bias) . rel[delta].
  virtual void window_attention_forward(Tensor& out, Tensor& lse, const Tensor& q,
                                        const Tensor& keys, const Tensor& values, const Tensor& rel,
                                        const Tensor& r_w_bias, const Tensor& r_r_bias,
                                        const AttentionShape& s) = 0;
  virtual void window_attention_backward(Tensor& dq, Tensor& dkeys, Tensor& dvalues, Tensor& drel,
                                         Tensor& dr_w_bias, Tensor& dr_r_bias, const Tensor& dout,
                                         const Tensor& lse, const Tensor& delta, const Tensor& q,
                                         const Tensor& keys, const Tensor& values,
                                         const Tensor& rel, const Tensor& r_w_bias,
                                         const Tensor& r_r_bias, const AttentionShape& s) = 0;
  // Compressed part. khat, vhat: [B, S, dl], slot j = g*r + k is chunk g's k-th vector (global
  // chunk numbering from 0); pos: [n_pos, dl], pos[id] the positional vector for relative id.
  // Query t is in chunk g_q = first_query_chunk + t / c and sees slot (g, k) iff g < g_q, with
  // score q_t . (khat[g*r + k] + pos[min((g_q - g)*r - 1 - k, n_pos - 1)]).
  // A query that sees no slot gets lse = -inf and a zero output. khat may end before the slots a
  // query could see (one sequence-parallel rank's slot group, first_query_chunk shifted by the
  // group's first chunk): the slots past its end are simply absent.
  virtual void chunk_attention_forward(Tensor& out, Tensor& lse, const Tensor& q,
                                       const Tensor& khat, const Tensor& vhat, const Tensor& pos,
                                       const AttentionShape& s) = 0;
  virtual void chunk_attention_backward(Tensor& dq, Tensor& dkhat, Tensor& dvhat, Tensor& dpos,
                                        const Tensor& dout, const Tensor& lse, const Tensor& delta,
                                        const Tensor& q, const Tensor& khat, const Tensor& vhat,
                                        const Tensor& pos, const AttentionShape& s) = 0;
  // out = out_a * exp(lse_a - lse) + out_b * exp(lse_b - lse), lse = logaddexp(lse_a, lse_b).
  // out*: [B, T, dl]; lse*: [B, H, T].
  virtual void attention_merge(Tensor& out, Tensor& lse, const Tensor& out_a, const Tensor& lse_a,
                               const Tensor& out_b, const Tensor& lse_b,
                               const AttentionShape& s) = 0;
  // delta[b, h, t] = sum_e dout[b, t, h*dh + e] * out[b, t, h*dh + e] (overwrites).
  virtual void attention_delta(Tensor& delta, const Tensor& dout, const Tensor& out,
                               const AttentionShape& s) = 0;

  // ---- optimizer ----------------------------------------------------------------------------
  // torch.optim.AdamW for one tensor at update `step` (1-based): p *= 1 - lr*wd; moments;
  // p -= lr * m_hat / (sqrt(v_hat) + eps).
  virtual void adamw_step(Tensor& param, const Tensor& grad, Tensor& exp_avg, Tensor& exp_avg_sq,
                          double lr, double beta1, double beta2, double eps, double weight_decay,
                          int64_t step) = 0;
};

std::unique_ptr<Ops> make_cpu_ops();

}  // namespace tls
