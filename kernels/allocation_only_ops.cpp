#include "kernels/allocation_only_ops.h"

#include <omp.h>

#include "kernels/cpu/chunk_fused_kernels.h"
#include "kernels/cpu/kernel_scratch.h"

namespace tls {

// Every compute op ignores its arguments: that is the point of this Ops. The few that allocate
// host tensors of their own in the CPU backend (kernels/cpu/kernel_scratch.h) allocate the same
// here, for as long.
#pragma GCC diagnostic ignored "-Wunused-parameter"

Device AllocationOnlyOps::device() const { return Device::cpu; }
Tensor AllocationOnlyOps::empty(const std::vector<int64_t>& shape, DType dtype) {
  return Tensor::empty(shape, dtype);
}
Tensor AllocationOnlyOps::zeros(const std::vector<int64_t>& shape, DType dtype) {
  return Tensor::empty(shape, dtype);
}
void AllocationOnlyOps::fill(Tensor& x, double value) {}
void AllocationOnlyOps::copy(Tensor& dst, const Tensor& src) {}
void AllocationOnlyOps::copy_rows(Tensor& dst, int64_t dst_row0, const Tensor& src,
                                  int64_t src_row0, int64_t n_rows) {}
void AllocationOnlyOps::add_rows(Tensor& dst, int64_t dst_row0, const Tensor& src, int64_t src_row0,
                                 int64_t n_rows) {}
std::vector<double> AllocationOnlyOps::to_host(const Tensor& x) {
  return std::vector<double>(static_cast<size_t>(x.numel()), 0.0);
}
void AllocationOnlyOps::from_host(Tensor& x, const std::vector<double>& values) {}
void AllocationOnlyOps::scale(Tensor& x, double alpha) {}
void AllocationOnlyOps::axpy(double alpha, const Tensor& x, Tensor& y) {}
void AllocationOnlyOps::add_bias(Tensor& y, const Tensor& bias) {}
void AllocationOnlyOps::sum_rows(const Tensor& dy, Tensor& dbias) {}
double AllocationOnlyOps::sum_squares(const Tensor& x) { return 0.0; }
double AllocationOnlyOps::sum(const Tensor& x) { return 0.0; }
bool AllocationOnlyOps::all_finite(const Tensor& x) { return true; }
void AllocationOnlyOps::gemm(bool trans_a, bool trans_b, double alpha, const Tensor& a,
                             const Tensor& b, double beta, Tensor& c) {}
void AllocationOnlyOps::set_gemm_inputs(GemmInputs mode) { gemm_inputs_ = mode; }
void AllocationOnlyOps::layernorm_forward(Tensor& out, Tensor& mean, Tensor& rstd, const Tensor& x,
                                          const Tensor& gamma, const Tensor& beta, double eps) {}
void AllocationOnlyOps::layernorm_backward(Tensor& dx, Tensor& dgamma, Tensor& dbeta,
                                           const Tensor& dout, const Tensor& x, const Tensor& gamma,
                                           const Tensor& mean, const Tensor& rstd) {
  // The float32 kernel's per-block column sums when it computes every gradient in one pass.
  if (x.dtype() == DType::f32 && dx.defined() && dgamma.defined() && dbeta.defined()) {
    const auto shape = cpu::scratch::layernorm_block_sums(x.matrix_rows(), x.matrix_cols());
    Tensor sums_gamma = Tensor::empty(shape, DType::f64),
           sums_beta = Tensor::empty(shape, DType::f64);
  }
}
void AllocationOnlyOps::row_sum(Tensor& sums, const Tensor& x, const Tensor& center, bool square) {}
void AllocationOnlyOps::layernorm_normalize(Tensor& out, Tensor& rstd, const Tensor& x,
                                            const Tensor& mean, const Tensor& sq_sum,
                                            const Tensor& gamma, const Tensor& beta,
                                            int64_t n_features, double eps) {}
void AllocationOnlyOps::layernorm_backward_sums(Tensor& sums, const Tensor& dout, const Tensor& x,
                                                const Tensor& gamma, const Tensor& mean,
                                                const Tensor& rstd) {}
void AllocationOnlyOps::layernorm_backward_apply(Tensor& dx, Tensor& dgamma, Tensor& dbeta,
                                                 const Tensor& dout, const Tensor& x,
                                                 const Tensor& gamma, const Tensor& mean,
                                                 const Tensor& rstd, const Tensor& sums,
                                                 int64_t n_features) {}
void AllocationOnlyOps::gelu_forward(Tensor& out, const Tensor& x) {}
void AllocationOnlyOps::gelu_backward(Tensor& dx, const Tensor& dout, const Tensor& x) {}
void AllocationOnlyOps::relu_forward(Tensor& out, const Tensor& x) {}
void AllocationOnlyOps::relu_backward(Tensor& dx, const Tensor& dout, const Tensor& x) {}
void AllocationOnlyOps::softmax_forward(Tensor& out, const Tensor& x) {}
void AllocationOnlyOps::softmax_backward(Tensor& dx, const Tensor& dout, const Tensor& out) {}
void AllocationOnlyOps::log_softmax_forward(Tensor& out, const Tensor& x) {}
void AllocationOnlyOps::nll_forward(Tensor& losses, const Tensor& logprobs, const Tensor& targets) {
}
void AllocationOnlyOps::log_softmax_nll_backward(Tensor& dlogits, const Tensor& logprobs,
                                                 const Tensor& targets, double scale) {}
void AllocationOnlyOps::chunk_softmax_forward(Tensor& out, const Tensor& x, int64_t chunk_size) {}
void AllocationOnlyOps::chunk_softmax_backward(Tensor& dx, const Tensor& dout, const Tensor& out,
                                               int64_t chunk_size) {}
void AllocationOnlyOps::embedding_forward(Tensor& out, const Tensor& table, const Tensor& tokens,
                                          double scale) {}
void AllocationOnlyOps::embedding_backward(Tensor& dtable, const Tensor& dout, const Tensor& tokens,
                                           double scale) {}
void AllocationOnlyOps::dropout_apply(Tensor& x, double p, const DropoutKey& key) {}
void AllocationOnlyOps::sinusoid_forward(Tensor& out, const std::vector<double>& positions) {}
void AllocationOnlyOps::compress_chunks_forward(Tensor& out, const Tensor& x, const Tensor& weights,
                                                int64_t chunk_size, int64_t chunk_rank,
                                                int64_t n_head, int64_t head_offset) {}
void AllocationOnlyOps::compress_chunks_backward(Tensor& dx, Tensor& dweights, const Tensor& dout,
                                                 const Tensor& x, const Tensor& weights,
                                                 int64_t chunk_size, int64_t chunk_rank,
                                                 int64_t n_head, int64_t head_offset) {}
void AllocationOnlyOps::window_attention_forward(Tensor& out, Tensor& lse, const Tensor& q,
                                                 const Tensor& keys, const Tensor& values,
                                                 const Tensor& rel, const Tensor& r_w_bias,
                                                 const Tensor& r_r_bias, const AttentionShape& s) {
  Tensor rel_reversed = Tensor::empty(cpu::scratch::window_reversed_rel(s), q.dtype());
}
void AllocationOnlyOps::window_attention_backward(
    Tensor& dq, Tensor& dkeys, Tensor& dvalues, Tensor& drel, Tensor& dr_w_bias, Tensor& dr_r_bias,
    const Tensor& dout, const Tensor& lse, const Tensor& delta, const Tensor& q, const Tensor& keys,
    const Tensor& values, const Tensor& rel, const Tensor& r_w_bias, const Tensor& r_r_bias,
    const AttentionShape& s) {
  Tensor rel_reversed = Tensor::empty(cpu::scratch::window_reversed_rel(s), q.dtype());
  Tensor drel_reversed;
  if (drel.defined())
    drel_reversed = Tensor::empty(cpu::scratch::window_reversed_rel(s), q.dtype());
}
void AllocationOnlyOps::chunk_attention_forward(Tensor& out, Tensor& lse, const Tensor& q,
                                                const Tensor& khat, const Tensor& vhat,
                                                const Tensor& pos, const AttentionShape& s) {
  Tensor pos_reversed = Tensor::empty(cpu::scratch::chunk_reversed_pos(pos.dim(0), s), q.dtype());
  Tensor khat_t, pos_t;
  if (cpu::chunk_attention_runs_fused(q.dtype())) {  // one head at a time
    khat_t = Tensor::empty(cpu::scratch::chunk_transposed_khat(khat.dim(1), 1, s), q.dtype());
    pos_t = Tensor::empty(cpu::scratch::chunk_transposed_pos(pos.dim(0), 1, s), q.dtype());
  }
}
void AllocationOnlyOps::chunk_attention_backward(Tensor& dq, Tensor& dkhat, Tensor& dvhat,
                                                 Tensor& dpos, const Tensor& dout,
                                                 const Tensor& lse, const Tensor& delta,
                                                 const Tensor& q, const Tensor& khat,
                                                 const Tensor& vhat, const Tensor& pos,
                                                 const AttentionShape& s) {
  Tensor pos_reversed = Tensor::empty(cpu::scratch::chunk_reversed_pos(pos.dim(0), s), q.dtype());
  Tensor khat_t, pos_t;
  if (cpu::chunk_attention_runs_fused(q.dtype())) {  // one head per thread
    const int64_t threads = omp_get_max_threads();
    khat_t = Tensor::empty(cpu::scratch::chunk_transposed_khat(khat.dim(1), threads, s), q.dtype());
    pos_t = Tensor::empty(cpu::scratch::chunk_transposed_pos(pos.dim(0), threads, s), q.dtype());
  }
  Tensor dpos_reversed;
  if (dpos.defined())
    dpos_reversed = Tensor::empty(cpu::scratch::chunk_reversed_pos(pos.dim(0), s), q.dtype());
}
void AllocationOnlyOps::attention_merge(Tensor& out, Tensor& lse, const Tensor& out_a,
                                        const Tensor& lse_a, const Tensor& out_b,
                                        const Tensor& lse_b, const AttentionShape& s) {}
void AllocationOnlyOps::attention_delta(Tensor& delta, const Tensor& dout, const Tensor& out,
                                        const AttentionShape& s) {}
void AllocationOnlyOps::adamw_step(Tensor& param, const Tensor& grad, Tensor& exp_avg,
                                   Tensor& exp_avg_sq, double lr, double beta1, double beta2,
                                   double eps, double weight_decay, int64_t step) {}

}  // namespace tls
