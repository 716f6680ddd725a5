// Softmax family of the CPU backend, per row (max-shifted, sums in double):
// softmax: y = exp(x - max) / sum exp(x - max); backward dx += y (dout - sum(dout y)).
// log_softmax: y = x - max - log sum exp(x - max); nll: loss_i = -y[i, t_i] (t_i < 0 skipped),
// backward dlogits += scale (exp(y) - onehot(t)). chunk_softmax: the same softmax taken over the
// c consecutive rows of each chunk, separately for every column, of [B, N, cols].
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/dispatch.h"

namespace tls {

using cpu::kParallelMin;

namespace {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

// Checks x/out (same shape, float) for the per-row softmax ops.
void check_pair(const char* op, const char* xn, const Tensor& x, const char* on, const Tensor& o) {
  cpu::check_float(op, xn, x);
  cpu::check_same(op, xn, x, on, o);
}

// Checks the targets of nll_forward / log_softmax_nll_backward and returns them.
const int32_t* targets_of(const char* op, const Tensor& logprobs, const Tensor& targets) {
  cpu::check_i32(op, "targets", targets);
  cpu::check_numel(op, "targets", targets, logprobs.matrix_rows());
  const int32_t* tp = targets.data<int32_t>();
  const int64_t vocab = logprobs.matrix_cols();
  for (int64_t i = 0; i < targets.numel(); ++i)
    if (tp[i] >= vocab)
      cpu::fail(op, "target " + std::to_string(tp[i]) + " at row " + std::to_string(i) +
                        " is out of range for " + std::to_string(vocab) + " classes");
  return tp;
}

}  // namespace

void CpuOps::softmax_forward(Tensor& out, const Tensor& x) {
  check_pair("softmax_forward", "x", x, "out", out);
  const int64_t rows = x.matrix_rows(), cols = x.matrix_cols();
  cpu::dispatch_float("softmax_forward", x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* xp = x.data<T>();
    T* yp = out.data<T>();
#pragma omp parallel for if (rows * cols >= kParallelMin)
    for (int64_t i = 0; i < rows; ++i) {
      const T* xr = xp + i * cols;
      T* yr = yp + i * cols;
      double mx = kNegInf;
      for (int64_t j = 0; j < cols; ++j) mx = std::max(mx, static_cast<double>(xr[j]));
      double s = 0.0;
      for (int64_t j = 0; j < cols; ++j) s += std::exp(static_cast<double>(xr[j]) - mx);
      const double inv = 1.0 / s;
      for (int64_t j = 0; j < cols; ++j)
        yr[j] = static_cast<T>(std::exp(static_cast<double>(xr[j]) - mx) * inv);
    }
  });
}

void CpuOps::softmax_backward(Tensor& dx, const Tensor& dout, const Tensor& out) {
  check_pair("softmax_backward", "out", out, "dout", dout);
  cpu::check_same("softmax_backward", "out", out, "dx", dx);
  const int64_t rows = out.matrix_rows(), cols = out.matrix_cols();
  cpu::dispatch_float("softmax_backward", out.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* yp = out.data<T>();
    const T* gp = dout.data<T>();
    T* dp = dx.data<T>();
#pragma omp parallel for if (rows * cols >= kParallelMin)
    for (int64_t i = 0; i < rows; ++i) {
      const T* yr = yp + i * cols;
      const T* gr = gp + i * cols;
      double dot = 0.0;
      for (int64_t j = 0; j < cols; ++j) dot += static_cast<double>(gr[j]) * yr[j];
      T* dr = dp + i * cols;
      for (int64_t j = 0; j < cols; ++j)
        dr[j] += static_cast<T>(static_cast<double>(yr[j]) * (static_cast<double>(gr[j]) - dot));
    }
  });
}

void CpuOps::log_softmax_forward(Tensor& out, const Tensor& x) {
  check_pair("log_softmax_forward", "x", x, "out", out);
  const int64_t rows = x.matrix_rows(), cols = x.matrix_cols();
  cpu::dispatch_float("log_softmax_forward", x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* xp = x.data<T>();
    T* yp = out.data<T>();
#pragma omp parallel for if (rows * cols >= kParallelMin)
    for (int64_t i = 0; i < rows; ++i) {
      const T* xr = xp + i * cols;
      T* yr = yp + i * cols;
      double mx = kNegInf;
      for (int64_t j = 0; j < cols; ++j) mx = std::max(mx, static_cast<double>(xr[j]));
      double s = 0.0;
      for (int64_t j = 0; j < cols; ++j) s += std::exp(static_cast<double>(xr[j]) - mx);
      const double shift = mx + std::log(s);
      for (int64_t j = 0; j < cols; ++j) yr[j] = static_cast<T>(static_cast<double>(xr[j]) - shift);
    }
  });
}

void CpuOps::nll_forward(Tensor& losses, const Tensor& logprobs, const Tensor& targets) {
  const char* op = "nll_forward";
  cpu::check_float(op, "logprobs", logprobs);
  cpu::check_like(op, "logprobs", logprobs, "losses", losses);
  const int64_t rows = logprobs.matrix_rows(), cols = logprobs.matrix_cols();
  cpu::check_numel(op, "losses", losses, rows);
  const int32_t* tp = targets_of(op, logprobs, targets);
  cpu::dispatch_float(op, logprobs.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* lp = logprobs.data<T>();
    T* out = losses.data<T>();
    for (int64_t i = 0; i < rows; ++i) out[i] = tp[i] < 0 ? T(0) : -lp[i * cols + tp[i]];
  });
}

void CpuOps::log_softmax_nll_backward(Tensor& dlogits, const Tensor& logprobs,
                                      const Tensor& targets, double scale) {
  const char* op = "log_softmax_nll_backward";
  check_pair(op, "logprobs", logprobs, "dlogits", dlogits);
  const int64_t rows = logprobs.matrix_rows(), cols = logprobs.matrix_cols();
  const int32_t* tp = targets_of(op, logprobs, targets);
  cpu::dispatch_float(op, logprobs.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* lp = logprobs.data<T>();
    T* dp = dlogits.data<T>();
#pragma omp parallel for if (rows * cols >= kParallelMin)
    for (int64_t i = 0; i < rows; ++i) {
      if (tp[i] < 0) continue;
      const T* lr = lp + i * cols;
      T* dr = dp + i * cols;
      for (int64_t j = 0; j < cols; ++j)
        dr[j] += static_cast<T>(scale * (std::exp(static_cast<double>(lr[j])) - (j == tp[i])));
    }
  });
}

namespace {

// Checks a chunk-softmax pair of [B, N, cols] tensors with N a multiple of chunk_size.
void check_chunks(const char* op, const Tensor& a, const char* bn, const Tensor& b,
                  int64_t chunk_size) {
  cpu::check_float(op, "x", a);
  cpu::check_same(op, "x", a, bn, b);
  if (a.rank() != 3 || chunk_size <= 0 || a.dim(1) % chunk_size != 0)
    cpu::fail(op, "expected [B, N, cols] with N a multiple of chunk_size " +
                      std::to_string(chunk_size) + ", got " + cpu::describe("x", a));
}

}  // namespace

void CpuOps::chunk_softmax_forward(Tensor& out, const Tensor& x, int64_t chunk_size) {
  check_chunks("chunk_softmax_forward", x, "out", out, chunk_size);
  const int64_t cols = x.dim(2), n_chunks = x.dim(0) * x.dim(1) / chunk_size;
  const int64_t c = chunk_size;
  cpu::dispatch_float("chunk_softmax_forward", x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* xp = x.data<T>();
    T* yp = out.data<T>();
#pragma omp parallel if (x.numel() >= kParallelMin)
    {
      std::vector<double> mx(static_cast<size_t>(cols)), s(static_cast<size_t>(cols));
#pragma omp for
      for (int64_t g = 0; g < n_chunks; ++g) {
        const T* xc = xp + g * c * cols;
        T* yc = yp + g * c * cols;
        std::fill(mx.begin(), mx.end(), kNegInf);
        std::fill(s.begin(), s.end(), 0.0);
        for (int64_t i = 0; i < c; ++i)
          for (int64_t j = 0; j < cols; ++j)
            mx[j] = std::max(mx[j], static_cast<double>(xc[i * cols + j]));
        for (int64_t i = 0; i < c; ++i)
          for (int64_t j = 0; j < cols; ++j)
            s[j] += std::exp(static_cast<double>(xc[i * cols + j]) - mx[j]);
        for (int64_t i = 0; i < c; ++i)
          for (int64_t j = 0; j < cols; ++j)
            yc[i * cols + j] =
                static_cast<T>(std::exp(static_cast<double>(xc[i * cols + j]) - mx[j]) / s[j]);
      }
    }
  });
}

void CpuOps::chunk_softmax_backward(Tensor& dx, const Tensor& dout, const Tensor& out,
                                    int64_t chunk_size) {
  check_chunks("chunk_softmax_backward", out, "dout", dout, chunk_size);
  cpu::check_same("chunk_softmax_backward", "out", out, "dx", dx);
  const int64_t cols = out.dim(2), n_chunks = out.dim(0) * out.dim(1) / chunk_size;
  const int64_t c = chunk_size;
  cpu::dispatch_float("chunk_softmax_backward", out.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* yp = out.data<T>();
    const T* gp = dout.data<T>();
    T* dp = dx.data<T>();
#pragma omp parallel if (out.numel() >= kParallelMin)
    {
      std::vector<double> dot(static_cast<size_t>(cols));
#pragma omp for
      for (int64_t g = 0; g < n_chunks; ++g) {
        const int64_t base = g * c * cols;
        std::fill(dot.begin(), dot.end(), 0.0);
        for (int64_t i = 0; i < c; ++i)
          for (int64_t j = 0; j < cols; ++j)
            dot[j] += static_cast<double>(gp[base + i * cols + j]) * yp[base + i * cols + j];
        for (int64_t i = 0; i < c; ++i)
          for (int64_t j = 0; j < cols; ++j) {
            const int64_t k = base + i * cols + j;
            dp[k] +=
                static_cast<T>(static_cast<double>(yp[k]) * (static_cast<double>(gp[k]) - dot[j]));
          }
      }
    }
  });
}

}  // namespace tls
