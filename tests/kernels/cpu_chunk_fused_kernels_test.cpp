// The fused compressed-attention kernels (kernels/cpu/chunk_fused_kernels.h) against plain loops
// in double, over row, slot and d_h counts that hit every register tile and masked tail, with
// leading dimensions wider than the data (the kernels must not touch what lies between rows).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "kernels/cpu/chunk_fused_kernels.h"

namespace tls::cpu {
namespace {

struct Sizes {
  int64_t m, n, dh;
};

std::vector<Sizes> sizes() {
  std::vector<Sizes> out;
  for (int64_t m : {1, 5, 8, 13, 16})
    for (int64_t n : {1, 15, 17, 48, 50, 97})
      for (int64_t dh : {5, 16, 33, 64, 80}) out.push_back({m, n, dh});
  return out;
}

std::vector<float> random_floats(size_t count, std::mt19937_64& rng) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> v(count);
  for (float& x : v) x = normal(rng);
  return v;
}

// Largest |got - want| over the scale of want (its largest magnitude, at least 1).
double scaled_error(const std::vector<float>& got, const std::vector<double>& want) {
  double err = 0, scale = 1;
  for (size_t i = 0; i < want.size(); ++i) {
    err = std::max(err, std::abs(got[i] - want[i]));
    scale = std::max(scale, std::abs(want[i]));
  }
  return err / scale;
}

const char* name(FusedLanes lanes) { return lanes == FusedLanes::avx512 ? "avx512" : "avx2"; }

// Every test runs each kernel on every instruction set this CPU has.
class ChunkFusedKernels : public ::testing::Test {
 protected:
  void SetUp() override {
    if (fused_lanes_available().empty()) GTEST_SKIP() << "this CPU has neither AVX2 nor AVX-512";
  }
};

TEST_F(ChunkFusedKernels, ScoresAreQTimesTheKeyPlusPositionSums) {
  std::mt19937_64 rng(3);
  for (FusedLanes lanes : fused_lanes_available())
    for (const Sizes& z : sizes()) {
      const int64_t ldq = z.dh + 3, ldk = z.n + 5, ldp = z.n + 9, lds = z.n + 7;
      const auto q = random_floats(z.m * ldq, rng), kt = random_floats(z.dh * ldk, rng),
                 pt = random_floats(z.dh * ldp, rng);
      std::vector<float> s(z.m * lds, 42.0f);
      fused_chunk_scores(lanes, z.m, z.n, z.dh, q.data(), ldq, kt.data(), ldk, pt.data(), ldp,
                         s.data(), lds);
      std::vector<float> got;
      std::vector<double> want;
      for (int64_t i = 0; i < z.m; ++i) {
        for (int64_t j = 0; j < z.n; ++j) {
          double acc = 0;
          for (int64_t k = 0; k < z.dh; ++k)
            acc += double(q[i * ldq + k]) * (double(kt[k * ldk + j]) + pt[k * ldp + j]);
          want.push_back(acc);
          got.push_back(s[i * lds + j]);
        }
        for (int64_t j = z.n; j < lds; ++j)
          ASSERT_EQ(s[i * lds + j], 42.0f) << "wrote past the row, m " << z.m << " n " << z.n;
      }
      EXPECT_LE(scaled_error(got, want), 1e-5)
          << name(lanes) << " m " << z.m << " n " << z.n << " dh " << z.dh;
    }
}

TEST_F(ChunkFusedKernels, DqAccumulatesDsTimesTheKeyPlusPositionSums) {
  std::mt19937_64 rng(4);
  for (FusedLanes lanes : fused_lanes_available())
    for (const Sizes& z : sizes()) {
      const int64_t ldds = z.n + 3, ldk = z.dh + 5, ldp = z.dh + 11, lddq = z.dh + 2;
      const auto ds = random_floats(z.m * ldds, rng), k = random_floats(z.n * ldk, rng),
                 p = random_floats(z.n * ldp, rng);
      std::vector<float> dq = random_floats(z.m * lddq, rng);
      const std::vector<float> before = dq;
      fused_chunk_dq(lanes, z.m, z.n, z.dh, ds.data(), ldds, k.data(), ldk, p.data(), ldp,
                     dq.data(), lddq);
      std::vector<float> got;
      std::vector<double> want;
      for (int64_t i = 0; i < z.m; ++i) {
        for (int64_t e = 0; e < z.dh; ++e) {
          double acc = before[i * lddq + e];
          for (int64_t j = 0; j < z.n; ++j)
            acc += double(ds[i * ldds + j]) * (double(k[j * ldk + e]) + p[j * ldp + e]);
          want.push_back(acc);
          got.push_back(dq[i * lddq + e]);
        }
        for (int64_t e = z.dh; e < lddq; ++e) ASSERT_EQ(dq[i * lddq + e], before[i * lddq + e]);
      }
      EXPECT_LE(scaled_error(got, want), 1e-5)
          << name(lanes) << " m " << z.m << " n " << z.n << " dh " << z.dh;
    }
}

TEST_F(ChunkFusedKernels, DkdpAddsDsTransposedTimesQToBothOrEither) {
  std::mt19937_64 rng(5);
  for (FusedLanes lanes : fused_lanes_available())
    for (const Sizes& z : sizes())
      for (int which = 0; which < 3; ++which) {  // both, dk only, dp only
        const int64_t ldds = z.n + 3, ldq = z.dh + 1, lddk = z.dh + 4, lddp = z.dh + 6;
        const auto ds = random_floats(z.m * ldds, rng), q = random_floats(z.m * ldq, rng);
        std::vector<float> dk = random_floats(z.n * lddk, rng), dp = random_floats(z.n * lddp, rng);
        const std::vector<float> dk0 = dk, dp0 = dp;
        fused_chunk_dkdp(lanes, z.m, z.n, z.dh, ds.data(), ldds, q.data(), ldq,
                         which != 2 ? dk.data() : nullptr, lddk, which != 1 ? dp.data() : nullptr,
                         lddp);
        std::vector<float> got_k, got_p;
        std::vector<double> want_k, want_p;
        for (int64_t j = 0; j < z.n; ++j) {
          for (int64_t e = 0; e < z.dh; ++e) {
            double u = 0;
            for (int64_t i = 0; i < z.m; ++i) u += double(ds[i * ldds + j]) * q[i * ldq + e];
            want_k.push_back(dk0[j * lddk + e] + (which != 2 ? u : 0.0));
            want_p.push_back(dp0[j * lddp + e] + (which != 1 ? u : 0.0));
            got_k.push_back(dk[j * lddk + e]);
            got_p.push_back(dp[j * lddp + e]);
          }
          for (int64_t e = z.dh; e < lddk; ++e) ASSERT_EQ(dk[j * lddk + e], dk0[j * lddk + e]);
          for (int64_t e = z.dh; e < lddp; ++e) ASSERT_EQ(dp[j * lddp + e], dp0[j * lddp + e]);
        }
        EXPECT_LE(scaled_error(got_k, want_k), 1e-5)
            << name(lanes) << " dk, m " << z.m << " n " << z.n;
        EXPECT_LE(scaled_error(got_p, want_p), 1e-5)
            << name(lanes) << " dp, m " << z.m << " n " << z.n;
      }
}

TEST(ChunkAttentionPath, AutomaticTakesTheWidestLanesAndFloat64TheGemmPath) {
  const std::vector<FusedLanes> available = fused_lanes_available();
  set_chunk_attention_path(ChunkAttentionPath::automatic);
  EXPECT_FALSE(chunk_attention_runs_fused(DType::f64));
  if (available.empty()) {
    EXPECT_FALSE(chunk_attention_fused_lanes(DType::f32).has_value());
  } else {
    EXPECT_EQ(chunk_attention_fused_lanes(DType::f32), available.back());
  }
  set_chunk_attention_path(ChunkAttentionPath::gemm);
  EXPECT_FALSE(chunk_attention_runs_fused(DType::f32));
  for (auto [path, lanes] : {std::pair{ChunkAttentionPath::fused_avx2, FusedLanes::avx2},
                             std::pair{ChunkAttentionPath::fused_avx512, FusedLanes::avx512}}) {
    set_chunk_attention_path(path);
    EXPECT_FALSE(chunk_attention_runs_fused(DType::f64));
    if (std::find(available.begin(), available.end(), lanes) != available.end()) {
      EXPECT_EQ(chunk_attention_fused_lanes(DType::f32), lanes);
    }
  }
  set_chunk_attention_path(ChunkAttentionPath::automatic);
}

}  // namespace
}  // namespace tls::cpu
