// The CUDA implementation of Ops: cuBLAS for GEMM, custom kernels for everything else (one op
// group per .cu file: memory.cu, elementwise.cu, layernorm.cu, ...), float32 and float64. It
// computes what the CPU reference (kernels/cpu) computes; tests/kernels/cuda_ops_test.cpp
// checks every op against it. All work of one device is ordered on that device's compute
// stream (common.h: compute_stream); host transfers and scalar results synchronise it.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "kernels/ops.h"

namespace tls {

class CudaOps final : public Ops {
 public:
  explicit CudaOps(int device);
  ~CudaOps() override;
  CudaOps(const CudaOps&) = delete;
  CudaOps& operator=(const CudaOps&) = delete;

  int device_index() const { return device_; }
  cudaStream_t stream() const { return stream_; }
  // Makes this device current on the calling thread (every op does it first).
  void activate() const;
  // Waits for all work queued on the compute stream.
  void synchronize() const;
  // Bytes of shared memory one block may use (opt-in limit of the device).
  size_t smem_optin() const { return smem_optin_; }

  Device device() const override;
  Tensor empty(const std::vector<int64_t>& shape, DType dtype) override;
  Tensor zeros(const std::vector<int64_t>& shape, DType dtype) override;
  void fill(Tensor& x, double value) override;
  void copy(Tensor& dst, const Tensor& src) override;
  void copy_rows(Tensor& dst, int64_t dst_row0, const Tensor& src, int64_t src_row0,
                 int64_t n_rows) override;
  void add_rows(Tensor& dst, int64_t dst_row0, const Tensor& src, int64_t src_row0,
                int64_t n_rows) override;
  std::vector<double> to_host(const Tensor& x) override;
  void from_host(Tensor& x, const std::vector<double>& values) override;
  // One device-to-host copy on the compute stream (after the work queued on it), then a wait.
  void copy_to_host_bytes(const Tensor& x, void* dst) override;
  // cudaHostRegister; nullptr when the driver refuses (the copy then runs from pageable memory).
  HostUnpin pin_host(void* p, size_t bytes) override;
  void scale(Tensor& x, double alpha) override;
  void axpy(double alpha, const Tensor& x, Tensor& y) override;
  void add_bias(Tensor& y, const Tensor& bias) override;
  void sum_rows(const Tensor& dy, Tensor& dbias) override;
  double sum_squares(const Tensor& x) override;
  double sum(const Tensor& x) override;
  bool all_finite(const Tensor& x) override;
  void gemm(bool trans_a, bool trans_b, double alpha, const Tensor& a, const Tensor& b, double beta,
            Tensor& c) override;
  // exact by default so float32 results match the CPU backend; tf32 switches cuBLAS's math
  // mode, bf16 converts the operands and runs cublasGemmEx with float32 accumulation.
  void set_gemm_inputs(GemmInputs mode) override;
  GemmInputs gemm_inputs() const override { return gemm_inputs_; }
  void layernorm_forward(Tensor& out, Tensor& mean, Tensor& rstd, const Tensor& x,
                         const Tensor& gamma, const Tensor& beta, double eps) override;
  void layernorm_backward(Tensor& dx, Tensor& dgamma, Tensor& dbeta, const Tensor& dout,
                          const Tensor& x, const Tensor& gamma, const Tensor& mean,
                          const Tensor& rstd) override;
  void row_sum(Tensor& sums, const Tensor& x, const Tensor& center, bool square) override;
  void layernorm_normalize(Tensor& out, Tensor& rstd, const Tensor& x, const Tensor& mean,
                           const Tensor& sq_sum, const Tensor& gamma, const Tensor& beta,
                           int64_t n_features, double eps) override;
  void layernorm_backward_sums(Tensor& sums, const Tensor& dout, const Tensor& x,
                               const Tensor& gamma, const Tensor& mean,
                               const Tensor& rstd) override;
  void layernorm_backward_apply(Tensor& dx, Tensor& dgamma, Tensor& dbeta, const Tensor& dout,
                                const Tensor& x, const Tensor& gamma, const Tensor& mean,
                                const Tensor& rstd, const Tensor& sums,
                                int64_t n_features) override;
  void gelu_forward(Tensor& out, const Tensor& x) override;
  void gelu_backward(Tensor& dx, const Tensor& dout, const Tensor& x) override;
  void relu_forward(Tensor& out, const Tensor& x) override;
  void relu_backward(Tensor& dx, const Tensor& dout, const Tensor& x) override;
  void softmax_forward(Tensor& out, const Tensor& x) override;
  void softmax_backward(Tensor& dx, const Tensor& dout, const Tensor& out) override;
  void log_softmax_forward(Tensor& out, const Tensor& x) override;
  void nll_forward(Tensor& losses, const Tensor& logprobs, const Tensor& targets) override;
  void log_softmax_nll_backward(Tensor& dlogits, const Tensor& logprobs, const Tensor& targets,
                                double scale) override;
  void chunk_softmax_forward(Tensor& out, const Tensor& x, int64_t chunk_size) override;
  void chunk_softmax_backward(Tensor& dx, const Tensor& dout, const Tensor& out,
                              int64_t chunk_size) override;
  void embedding_forward(Tensor& out, const Tensor& table, const Tensor& tokens,
                         double scale) override;
  void embedding_backward(Tensor& dtable, const Tensor& dout, const Tensor& tokens,
                          double scale) override;
  void dropout_apply(Tensor& x, double p, const DropoutKey& key) override;
  void sinusoid_forward(Tensor& out, const std::vector<double>& positions) override;
  void compress_chunks_forward(Tensor& out, const Tensor& x, const Tensor& weights,
                               int64_t chunk_size, int64_t chunk_rank, int64_t n_head,
                               int64_t head_offset) override;
  void compress_chunks_backward(Tensor& dx, Tensor& dweights, const Tensor& dout, const Tensor& x,
                                const Tensor& weights, int64_t chunk_size, int64_t chunk_rank,
                                int64_t n_head, int64_t head_offset) override;
  void window_attention_forward(Tensor& out, Tensor& lse, const Tensor& q, const Tensor& keys,
                                const Tensor& values, const Tensor& rel, const Tensor& r_w_bias,
                                const Tensor& r_r_bias, const AttentionShape& s) override;
  void window_attention_backward(Tensor& dq, Tensor& dkeys, Tensor& dvalues, Tensor& drel,
                                 Tensor& dr_w_bias, Tensor& dr_r_bias, const Tensor& dout,
                                 const Tensor& lse, const Tensor& delta, const Tensor& q,
                                 const Tensor& keys, const Tensor& values, const Tensor& rel,
                                 const Tensor& r_w_bias, const Tensor& r_r_bias,
                                 const AttentionShape& s) override;
  void chunk_attention_forward(Tensor& out, Tensor& lse, const Tensor& q, const Tensor& khat,
                               const Tensor& vhat, const Tensor& pos,
                               const AttentionShape& s) override;
  void chunk_attention_backward(Tensor& dq, Tensor& dkhat, Tensor& dvhat, Tensor& dpos,
                                const Tensor& dout, const Tensor& lse, const Tensor& delta,
                                const Tensor& q, const Tensor& khat, const Tensor& vhat,
                                const Tensor& pos, const AttentionShape& s) override;
  void attention_merge(Tensor& out, Tensor& lse, const Tensor& out_a, const Tensor& lse_a,
                       const Tensor& out_b, const Tensor& lse_b, const AttentionShape& s) override;
  void attention_delta(Tensor& delta, const Tensor& dout, const Tensor& out,
                       const AttentionShape& s) override;
  void adamw_step(Tensor& param, const Tensor& grad, Tensor& exp_avg, Tensor& exp_avg_sq, double lr,
                  double beta1, double beta2, double eps, double weight_decay,
                  int64_t step) override;

 private:
  // Throws a tls::Error when a kernel flagged an out-of-range index (token id or target).
  void check_index_flag(const char* op, const char* what, int64_t limit);
  int device_ = 0;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t cublas_ = nullptr;
  GemmInputs gemm_inputs_ = GemmInputs::exact;
  size_t smem_optin_ = 0;      // bytes of shared memory a block may opt in to
  int* index_flag_ = nullptr;  // device int: first bad index found by a checking kernel, or -1
};

std::unique_ptr<Ops> make_cuda_ops(int device);

}  // namespace tls
