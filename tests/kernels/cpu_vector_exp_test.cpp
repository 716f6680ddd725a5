// exp_shifted (kernels/cpu/vector_exp.cpp) against double-precision exp: every input range the
// attention softmaxes produce (scores minus the row maximum, so <= 0), lengths that are not a
// multiple of the vector width, and the underflow edge.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "kernels/cpu/vector_exp.h"

namespace tls::test {
namespace {

TEST(VectorExp, MatchesExpWithinTwoUlpOverTheSoftmaxRange) {
  if (!cpu::exp_shifted_is_vectorised())
    std::printf("note: this CPU has no AVX2+FMA; exp_shifted uses libm\n");
  std::mt19937 gen(7);
  std::uniform_real_distribution<float> dist(-83.0f, 10.0f);
  for (int64_t n : {1, 7, 8, 9, 31, 1000}) {
    std::vector<float> x(static_cast<size_t>(n));
    for (float& v : x) v = dist(gen);
    const float shift = 3.25f;
    std::vector<float> y = x;
    const double total = cpu::exp_shifted(y.data(), n, shift);
    double want_total = 0;
    for (int64_t j = 0; j < n; ++j) {
      const double want = std::exp(static_cast<double>(x[j] - shift));
      want_total += y[j];
      ASSERT_NEAR(y[j], want, 2.5e-7 * want) << "x = " << x[j] << " (n = " << n << ")";
    }
    EXPECT_DOUBLE_EQ(total, want_total) << "the returned sum is the sum of the results";
  }
}

const char* lanes_name(cpu::ExpLanes l) {
  return l == cpu::ExpLanes::libm ? "libm" : l == cpu::ExpLanes::avx2 ? "avx2" : "avx512";
}

// Every path this CPU has, not only the widest that exp_shifted takes: lengths around both
// vector widths (the AVX-512 tail runs on masked-off lanes), and the paths agree bitwise where
// they run the same polynomial.
TEST(VectorExp, EveryLanesPathMatchesExpAndTheVectorPathsAgreeBitwise) {
  std::mt19937 gen(11);
  std::uniform_real_distribution<float> dist(-85.0f, 5.0f);
  const auto available = cpu::exp_lanes_available();
  std::printf("exp lanes on this CPU:");
  for (auto l : available) std::printf(" %s", lanes_name(l));
  std::printf("\n");
  for (int64_t n : {1, 5, 8, 15, 16, 17, 31, 33, 256, 1001}) {
    std::vector<float> x(static_cast<size_t>(n));
    for (float& v : x) v = dist(gen);
    std::vector<std::vector<float>> results;
    for (auto lanes : available) {
      std::vector<float> y = x;
      const double total = cpu::exp_shifted_on(lanes, y.data(), n, 1.5f);
      double want_total = 0;
      for (int64_t j = 0; j < n; ++j) {
        const double want = std::exp(static_cast<double>(x[j] - 1.5f));
        want_total += y[j];
        ASSERT_NEAR(y[j], want, 2.5e-7 * want)
            << lanes_name(lanes) << ": x = " << x[j] << " (n = " << n << ")";
      }
      EXPECT_DOUBLE_EQ(total, want_total) << lanes_name(lanes);
      if (lanes != cpu::ExpLanes::libm) results.push_back(y);
    }
    for (size_t k = 1; k < results.size(); ++k) {
      for (int64_t j = 0; j < n / 8 * 8; ++j)  // the AVX2 path's tail is libm's
        EXPECT_EQ(results[k][j], results[0][j]) << "element " << j << " of " << n;
    }
  }
}

TEST(VectorExp, ExactAtZeroAndZeroFarBelowTheNormalRange) {
  std::vector<float> x = {0.0f, -0.0f, -100.0f, -1e30f, -INFINITY, 0.0f, -1.0f, 1.0f, 0.5f};
  cpu::exp_shifted(x.data(), static_cast<int64_t>(x.size()), 0.0f);
  EXPECT_EQ(x[0], 1.0f);
  EXPECT_EQ(x[1], 1.0f);
  EXPECT_EQ(x[2], 0.0f);
  EXPECT_EQ(x[3], 0.0f);
  EXPECT_EQ(x[4], 0.0f);
  EXPECT_NEAR(x[6], std::exp(-1.0), 2.5e-7);
  EXPECT_NEAR(x[7], std::exp(1.0), 2.5e-7 * std::exp(1.0));
}

TEST(VectorExp, DoubleIsLibm) {
  std::vector<double> x = {-3.0, 0.0, 2.0};
  const double total = cpu::exp_shifted(x.data(), 3, 1.0);
  EXPECT_EQ(x[0], std::exp(-4.0));
  EXPECT_EQ(x[1], std::exp(-1.0));
  EXPECT_EQ(x[2], std::exp(1.0));
  EXPECT_EQ(total, std::exp(-4.0) + std::exp(-1.0) + std::exp(1.0));
}

// The backward's fused row pass on every path: p = exp(s - lse) and ds = p (dp - delta) against
// double arithmetic, lengths around both vector widths (the masked AVX-512 tail must neither
// read nor write past n), and the vector paths agree bitwise.
TEST(VectorExp, SoftmaxBackwardRowOnEveryLanesPath) {
  std::mt19937 gen(13);
  std::uniform_real_distribution<float> score(-20.0f, 4.0f), grad(-2.0f, 2.0f);
  const float lse = 3.5f, delta = 0.25f;
  for (int64_t n : {1, 7, 8, 15, 16, 17, 33, 256}) {
    std::vector<float> s(static_cast<size_t>(n) + 3), g(static_cast<size_t>(n) + 3);
    for (float& v : s) v = score(gen);
    for (float& v : g) v = grad(gen);
    std::vector<std::vector<float>> vector_ps, vector_ds;
    for (auto lanes : cpu::exp_lanes_available()) {
      std::vector<float> p = s, d = g;
      cpu::softmax_backward_row_on(lanes, p.data(), d.data(), n, lse, delta);
      for (int64_t j = 0; j < n; ++j) {
        const double want_p = std::exp(static_cast<double>(s[j] - lse));
        const double want_ds = want_p * (static_cast<double>(g[j]) - delta);
        ASSERT_NEAR(p[j], want_p, 3e-7 * want_p) << lanes_name(lanes) << " j " << j;
        ASSERT_NEAR(d[j], want_ds, 5e-7 * std::abs(want_ds) + 1e-12)
            << lanes_name(lanes) << " j " << j;
      }
      for (size_t j = static_cast<size_t>(n); j < s.size(); ++j) {
        EXPECT_EQ(p[j], s[j]) << lanes_name(lanes) << ": wrote past n = " << n;
        EXPECT_EQ(d[j], g[j]) << lanes_name(lanes) << ": wrote past n = " << n;
      }
      if (lanes != cpu::ExpLanes::libm) vector_ps.push_back(p), vector_ds.push_back(d);
    }
    for (size_t k = 1; k < vector_ps.size(); ++k)
      for (int64_t j = 0; j < n / 8 * 8; ++j) {  // the AVX2 path's tail is libm's
        EXPECT_EQ(vector_ps[k][j], vector_ps[0][j]) << "element " << j << " of " << n;
        EXPECT_EQ(vector_ds[k][j], vector_ds[0][j]) << "element " << j << " of " << n;
      }
  }
  std::vector<double> p = {1.0, -2.0}, d = {0.5, -1.0};
  cpu::softmax_backward_row(p.data(), d.data(), 2, 1.0, 0.5);
  EXPECT_EQ(p[0], 1.0);
  EXPECT_EQ(d[0], 0.0);
  EXPECT_EQ(p[1], std::exp(-3.0));
  EXPECT_EQ(d[1], std::exp(-3.0) * -1.5);
}

}  // namespace
}  // namespace tls::test
