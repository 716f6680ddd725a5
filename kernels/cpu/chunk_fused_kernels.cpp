// Register tiles for chunk_fused_kernels.h on AVX-512 and on AVX2 + FMA: one body
// (chunk_fused_tiles.inc) included per instruction set with its vector vocabulary and tile sizes.
// Each tile keeps its accumulators in registers and streams the contraction; tails run on
// masked lanes and smaller template instances, so any m, n and d_h work.
//   AVX-512 (32 zmm): scores 8 rows x 48 slots, dQ 6 rows x 64 columns, dK/dP 6 slots x 64
//   AVX2 (16 ymm):    scores 6 rows x 16 slots, dQ 6 rows x 16 columns, dK/dP 6 slots x 16
// (12 accumulators, the key or row vectors and a broadcast: the full tiles keep no masks in
// registers, which on AVX2 are vectors too).
#include "kernels/cpu/chunk_fused_kernels.h"

#include <algorithm>
#include <atomic>
#include <stdexcept>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define TLS_FUSED_X86 1
#endif

namespace tls::cpu {

namespace {

std::atomic<ChunkAttentionPath> g_chunk_path{ChunkAttentionPath::automatic};

// Calls f.template operator()<C>() with C = count, for counts 1 .. kMax (kMax <= 8): the row,
// slot and vector counts of the tiles are template arguments, so their loops unroll fully and
// the accumulators stay in registers.
template <int kMax, class F>
void with_count(int64_t count, F&& f) {
  switch (count) {
#define TLS_WITH_COUNT_CASE(C)    \
  case C:                         \
    if constexpr (kMax >= C) {    \
      f.template operator()<C>(); \
      return;                     \
    }                             \
    break;
    TLS_WITH_COUNT_CASE(1)
    TLS_WITH_COUNT_CASE(2)
    TLS_WITH_COUNT_CASE(3)
    TLS_WITH_COUNT_CASE(4)
    TLS_WITH_COUNT_CASE(5)
    TLS_WITH_COUNT_CASE(6)
    TLS_WITH_COUNT_CASE(7)
    TLS_WITH_COUNT_CASE(8)
#undef TLS_WITH_COUNT_CASE
    default:
      break;
  }
  throw std::logic_error("chunk_fused_kernels: tile count out of range");
}

}  // namespace

#ifdef TLS_FUSED_X86

// GCC 12 warns inside its own avx512fintrin.h (the _mm512_undefined_ps of the unmasked
// intrinsics); the warning is about the header, not this code.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

namespace fused_avx512 {
namespace {
#define TLS_TILE_TARGET __attribute__((target("avx512f")))
using Vec = __m512;
using Mask = __mmask16;
constexpr int64_t kLanes = 16;
constexpr int kScoreRows = 8, kScoreVecs = 3, kDqRows = 6, kDqVecs = 4, kDkSlots = 6, kDkVecs = 4;
TLS_TILE_TARGET inline Mask lanes_mask(int64_t count) {
  if (count >= kLanes) return static_cast<Mask>(0xFFFF);
  if (count <= 0) return 0;
  return static_cast<Mask>((1u << count) - 1u);
}
TLS_TILE_TARGET inline Vec vzero() { return _mm512_setzero_ps(); }
TLS_TILE_TARGET inline Vec vload(Mask m, const float* p) { return _mm512_maskz_loadu_ps(m, p); }
TLS_TILE_TARGET inline Vec vloadu(const float* p) { return _mm512_loadu_ps(p); }
TLS_TILE_TARGET inline void vstoreu(float* p, Vec v) { _mm512_storeu_ps(p, v); }
TLS_TILE_TARGET inline void vstore(float* p, Mask m, Vec v) { _mm512_mask_storeu_ps(p, m, v); }
TLS_TILE_TARGET inline Vec vadd(Vec a, Vec b) { return _mm512_add_ps(a, b); }
TLS_TILE_TARGET inline Vec vfmadd(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
TLS_TILE_TARGET inline Vec vset1(float x) { return _mm512_set1_ps(x); }
}  // namespace
#include "kernels/cpu/chunk_fused_tiles.inc"
#undef TLS_TILE_TARGET
}  // namespace fused_avx512

namespace fused_avx2 {
namespace {
#define TLS_TILE_TARGET __attribute__((target("avx2,fma")))
using Vec = __m256;
using Mask = __m256i;  // lane i on where its sign bit is set (maskload / maskstore)
constexpr int64_t kLanes = 8;
constexpr int kScoreRows = 6, kScoreVecs = 2, kDqRows = 6, kDqVecs = 2, kDkSlots = 6, kDkVecs = 2;
TLS_TILE_TARGET inline Mask lanes_mask(int64_t count) {
  const int c = static_cast<int>(std::clamp<int64_t>(count, 0, kLanes));
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(c), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
TLS_TILE_TARGET inline Vec vzero() { return _mm256_setzero_ps(); }
TLS_TILE_TARGET inline Vec vload(Mask m, const float* p) { return _mm256_maskload_ps(p, m); }
TLS_TILE_TARGET inline Vec vloadu(const float* p) { return _mm256_loadu_ps(p); }
TLS_TILE_TARGET inline void vstoreu(float* p, Vec v) { _mm256_storeu_ps(p, v); }
TLS_TILE_TARGET inline void vstore(float* p, Mask m, Vec v) { _mm256_maskstore_ps(p, m, v); }
TLS_TILE_TARGET inline Vec vadd(Vec a, Vec b) { return _mm256_add_ps(a, b); }
TLS_TILE_TARGET inline Vec vfmadd(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
TLS_TILE_TARGET inline Vec vset1(float x) { return _mm256_set1_ps(x); }
}  // namespace
#include "kernels/cpu/chunk_fused_tiles.inc"
#undef TLS_TILE_TARGET
}  // namespace fused_avx2

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

std::vector<FusedLanes> fused_lanes_available() {
  __builtin_cpu_init();
  std::vector<FusedLanes> lanes;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    lanes.push_back(FusedLanes::avx2);
  if (__builtin_cpu_supports("avx512f")) lanes.push_back(FusedLanes::avx512);
  return lanes;
}

void fused_chunk_scores(FusedLanes lanes, int64_t m, int64_t n, int64_t dh, const float* qm,
                        int64_t ldq, const float* kt, int64_t ldk, const float* pt, int64_t ldp,
                        float* s, int64_t lds) {
  if (lanes == FusedLanes::avx512)
    fused_avx512::scores(m, n, dh, qm, ldq, kt, ldk, pt, ldp, s, lds);
  else
    fused_avx2::scores(m, n, dh, qm, ldq, kt, ldk, pt, ldp, s, lds);
}

void fused_chunk_dq(FusedLanes lanes, int64_t m, int64_t n, int64_t dh, const float* ds,
                    int64_t ldds, const float* k, int64_t ldk, const float* p, int64_t ldp,
                    float* dq, int64_t lddq) {
  if (lanes == FusedLanes::avx512)
    fused_avx512::dq(m, n, dh, ds, ldds, k, ldk, p, ldp, dq, lddq);
  else
    fused_avx2::dq(m, n, dh, ds, ldds, k, ldk, p, ldp, dq, lddq);
}

void fused_chunk_dkdp(FusedLanes lanes, int64_t m, int64_t n, int64_t dh, const float* ds,
                      int64_t ldds, const float* qm, int64_t ldq, float* dk, int64_t lddk,
                      float* dp, int64_t lddp) {
  if (lanes == FusedLanes::avx512)
    fused_avx512::dkdp(m, n, dh, ds, ldds, qm, ldq, dk, lddk, dp, lddp);
  else
    fused_avx2::dkdp(m, n, dh, ds, ldds, qm, ldq, dk, lddk, dp, lddp);
}

#else  // not x86: the GEMM path runs instead

std::vector<FusedLanes> fused_lanes_available() { return {}; }
void fused_chunk_scores(FusedLanes, int64_t, int64_t, int64_t, const float*, int64_t, const float*,
                        int64_t, const float*, int64_t, float*, int64_t) {
  throw std::logic_error("fused_chunk_scores: no vector lanes for it on this architecture");
}
void fused_chunk_dq(FusedLanes, int64_t, int64_t, int64_t, const float*, int64_t, const float*,
                    int64_t, const float*, int64_t, float*, int64_t) {
  throw std::logic_error("fused_chunk_dq: no vector lanes for it on this architecture");
}
void fused_chunk_dkdp(FusedLanes, int64_t, int64_t, int64_t, const float*, int64_t, const float*,
                      int64_t, float*, int64_t, float*, int64_t) {
  throw std::logic_error("fused_chunk_dkdp: no vector lanes for it on this architecture");
}

#endif

void set_chunk_attention_path(ChunkAttentionPath path) { g_chunk_path.store(path); }

std::optional<FusedLanes> chunk_attention_fused_lanes(DType dtype) {
  static const std::vector<FusedLanes> available = fused_lanes_available();
  if (dtype != DType::f32 || available.empty()) return std::nullopt;
  const auto has = [&](FusedLanes l) {
    return std::find(available.begin(), available.end(), l) != available.end();
  };
  switch (g_chunk_path.load()) {
    case ChunkAttentionPath::gemm:
      return std::nullopt;
    case ChunkAttentionPath::fused_avx2:
      if (has(FusedLanes::avx2)) return FusedLanes::avx2;
      break;
    case ChunkAttentionPath::fused_avx512:
      if (has(FusedLanes::avx512)) return FusedLanes::avx512;
      break;
    case ChunkAttentionPath::automatic:
      break;
  }
  return available.back();  // the widest
}

bool chunk_attention_runs_fused(DType dtype) {
  return chunk_attention_fused_lanes(dtype).has_value();
}

}  // namespace tls::cpu
