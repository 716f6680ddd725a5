// CPU embedding, dropout and sinusoid ops (kernels/cpu/embedding.cpp, dropout.cpp,
// sinusoid.cpp): embedding against loops and finite differences, the dropout mask's rate and
// layout independence, and the positional encoding in the tensor's working precision.
#include <array>

#include "cpu_test_util.h"

namespace tls::test {
namespace {

template <class T>
class CpuEmbeddingDropoutTest : public KernelTest<T> {};
TYPED_TEST_SUITE(CpuEmbeddingDropoutTest, FloatTypes);

TYPED_TEST(CpuEmbeddingDropoutTest, EmbeddingForwardAndBackward) {
  const int64_t V = 11, D = 13;
  const std::vector<int32_t> tv = {3, 0, 10, 3, 7, 3, 1};
  const int64_t R = static_cast<int64_t>(tv.size());
  Tensor table = this->rand({V, D}, 1), tokens = this->ids(tv);
  Tensor out = this->zeros({1, R, D});
  this->ops->embedding_forward(out, table, tokens, 1.7);
  const auto tab = this->host(table);
  std::vector<double> want(R * D);
  for (int64_t i = 0; i < R; ++i)
    for (int64_t j = 0; j < D; ++j) want[i * D + j] = tab[tv[i] * D + j] * 1.7;
  expect_close(this->host(out), want, this->tol, "forward");

  Tensor dout = this->rand({1, R, D}, 2), dtable = this->rand({V, D}, 3);
  auto acc = this->host(dtable);
  const auto g = this->host(dout);
  for (int k = 0; k < 2; ++k) {  // twice: accumulates
    for (int64_t i = 0; i < R; ++i)
      for (int64_t j = 0; j < D; ++j) acc[tv[i] * D + j] += 1.7 * g[i * D + j];
    this->ops->embedding_backward(dtable, dout, tokens, 1.7);
    expect_close(this->host(dtable), acc, this->tol, "backward");
  }
}

TEST(CpuEmbeddingDropout, EmbeddingBackwardMatchesFiniteDifferences) {
  auto ops = make_cpu_ops();
  const int64_t V = 5, D = 3;
  const std::vector<int32_t> tv = {4, 1, 4, 0};
  const double scale = 0.8;
  auto tab = random_nonzero(V * D, 4), w = random_nonzero(4 * D, 5);
  Tensor tokens = ops->empty({4}, DType::i32);
  std::copy(tv.begin(), tv.end(), tokens.data<int32_t>());
  Tensor dout = ops->empty({4, D}, DType::f64), dtable = ops->zeros({V, D}, DType::f64);
  ops->from_host(dout, w);
  ops->embedding_backward(dtable, dout, tokens, scale);
  auto num = numeric_grad(tab, [&](const std::vector<double>& t) {
    Tensor table = ops->empty({V, D}, DType::f64), out = ops->zeros({4, D}, DType::f64);
    ops->from_host(table, t);
    ops->embedding_forward(out, table, tokens, scale);
    return dot(ops->to_host(out), w);
  });
  expect_close(ops->to_host(dtable), num, 1e-8);
}

TYPED_TEST(CpuEmbeddingDropoutTest, EmbeddingRejectsBadTokens) {
  Tensor table = this->rand({11, 4}, 1), out = this->zeros({3, 4});
  Tensor high = this->ids({1, 2, 11}), low = this->ids({-2, 0, 1});
  expect_error([&] { this->ops->embedding_forward(out, table, high, 1.0); },
               "token id 11 at position 2");
  expect_error([&] { this->ops->embedding_backward(table, out, low, 1.0); },
               "token id -2 at position 0");
  Tensor wide = this->zeros({3, 5});
  expect_error([&] { this->ops->embedding_forward(wide, table, high, 1.0); }, "shape mismatch");
}

// Applies dropout to a copy of `values` laid out as [b_local * t_local, cols].
template <class F>
std::vector<double> dropped(F* f, const std::vector<double>& values, int64_t rows, int64_t cols,
                            double p, const DropoutKey& key) {
  Tensor x = f->tensor({rows, cols}, values);
  f->ops->dropout_apply(x, p, key);
  return f->host(x);
}

TYPED_TEST(CpuEmbeddingDropoutTest, DropoutZeroIsIdentity) {
  Tensor x = this->rand({5, 9}, 1);
  const auto before = this->host(x);
  this->ops->dropout_apply(x, 0.0, DropoutKey{7, 3, 1, 5, 5, 0, 0});
  EXPECT_EQ(this->host(x), before);
}

TYPED_TEST(CpuEmbeddingDropoutTest, DropoutKeepsOneMinusP) {
  const double p = 0.3;
  Tensor x = this->ops->empty({1000, 257}, this->dt);
  this->ops->fill(x, 1.0);
  this->ops->dropout_apply(x, p, DropoutKey{123, 1, 2, 1000, 1000, 0, 0});
  const double kept_value = static_cast<double>(static_cast<TypeParam>(1.0 / (1.0 - p)));
  int64_t kept = 0;
  for (double v : this->host(x)) {
    ASSERT_TRUE(v == 0.0 || v == kept_value) << v;
    kept += v != 0.0;
  }
  EXPECT_NEAR(static_cast<double>(kept) / x.numel(), 1.0 - p, 0.005);
}

TYPED_TEST(CpuEmbeddingDropoutTest, DropoutMaskIndependentOfLayout) {
  const int64_t B = 3, T = 10, C = 7;
  const double p = 0.5;
  const auto g = random_nonzero(B * T * C, 2);
  const DropoutKey whole{99, 4, 17, T, T, 0, 0};
  const auto ref = dropped(this, g, B * T, C, p, whole);
  // (b_offset, b_local, t_offset, t_local) splittings of the same [B, T, C] tensor.
  for (auto [b0, bl, t0, tl] : std::vector<std::array<int64_t, 4>>{
           {0, 3, 3, 4}, {1, 2, 0, 10}, {2, 1, 5, 5}, {0, 1, 9, 1}}) {
    std::vector<double> local, want;
    for (int64_t b = b0; b < b0 + bl; ++b)
      for (int64_t t = t0; t < t0 + tl; ++t)
        for (int64_t j = 0; j < C; ++j) {
          local.push_back(g[(b * T + t) * C + j]);
          want.push_back(ref[(b * T + t) * C + j]);
        }
    const DropoutKey key{99, 4, 17, tl, T, t0, b0};
    expect_close(dropped(this, local, bl * tl, C, p, key), want, 0.0,
                 "b0=" + std::to_string(b0) + " t0=" + std::to_string(t0));
  }
  // Same key again: same mask; another step, tensor id or seed: another mask.
  EXPECT_EQ(dropped(this, g, B * T, C, p, whole), ref);
  for (DropoutKey other : {DropoutKey{99, 5, 17, T, T, 0, 0}, DropoutKey{99, 4, 18, T, T, 0, 0},
                           DropoutKey{100, 4, 17, T, T, 0, 0}}) {
    const auto y = dropped(this, g, B * T, C, p, other);
    int64_t differ = 0;
    for (size_t i = 0; i < y.size(); ++i) differ += (y[i] == 0.0) != (ref[i] == 0.0);
    EXPECT_GT(differ, static_cast<int64_t>(y.size()) / 4);
  }
}

TEST(CpuEmbeddingDropout, DropoutMaskSameInBothPrecisions) {
  auto ops = make_cpu_ops();
  const DropoutKey key{5, 6, 7, 4, 8, 2, 1};
  Tensor a = ops->empty({8, 33}, DType::f32), b = ops->empty({8, 33}, DType::f64);
  ops->fill(a, 1.0);
  ops->fill(b, 1.0);
  ops->dropout_apply(a, 0.25, key);
  ops->dropout_apply(b, 0.25, key);
  const auto av = ops->to_host(a), bv = ops->to_host(b);
  for (size_t i = 0; i < av.size(); ++i) EXPECT_EQ(av[i] == 0.0, bv[i] == 0.0) << i;
  expect_error([&] { ops->dropout_apply(a, 1.5, key); }, "dropout_apply");
  expect_error(
      [&] {
        ops->dropout_apply(a, 0.5, DropoutKey{5, 6, 7, 3, 8, 0, 0});
      },
      "dropout_apply");
}

TYPED_TEST(CpuEmbeddingDropoutTest, SinusoidInWorkingPrecision) {
  using T = TypeParam;
  const std::vector<double> pos = {0.0, 1.0, 5.0, 63.0, 1000.5};
  for (int64_t d : {2, 10, 64}) {
    Tensor out = this->zeros({1, 5, d});
    this->ops->sinusoid_forward(out, pos);
    std::vector<double> want(5 * d);
    for (int64_t i = 0; i < 5; ++i)
      for (int64_t j = 0; j < d / 2; ++j) {
        const T inv = T(1) / std::pow(T(10000), static_cast<T>(2 * j) / static_cast<T>(d));
        const T a = static_cast<T>(pos[i]) * inv;
        want[i * d + j] = std::sin(static_cast<double>(a));
        want[i * d + d / 2 + j] = std::cos(static_cast<double>(a));
      }
    expect_close(this->host(out), want, this->tol, "d=" + std::to_string(d));
  }
  Tensor odd = this->zeros({5, 3});
  expect_error([&] { this->ops->sinusoid_forward(odd, pos); }, "sinusoid_forward");
}

}  // namespace
}  // namespace tls::test
