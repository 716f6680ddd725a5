// The compressed attention's three products with the positional term folded into the key, on
// AVX-512 or AVX2 lanes (chunk_attention.cpp, fused path).
//
// The c query rows of one chunk share their relative ids: slot j has id top - j for all of
// them. With pos stored reversed (and its clamped ids as extra leading rows), slot j's positional
// row is row m0 + j: a contiguous shift. So the chunk's keys are khat[j] + pos_rev[m0 + j], and
//   scores = Q (K + P)^T,   dQ += dS (K + P),   dK += dS^T Q and dP += dS^T Q (the same product)
// are one product each instead of two (the GEMM path scores every row against every id of a
// block and shifts the scores). The key sum is formed in registers, never stored.
//
// Layouts: row-major with leading dimensions; `kt`/`pt` are the transposed tables ([dh][slots],
// [dh][rows of pos_rev]) the scores kernel reads along slots. Callers pass lanes from
// fused_lanes_available().
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "kernels/tensor.h"

namespace tls::cpu {

// The instruction sets the kernels are built for.
enum class FusedLanes { avx2, avx512 };

// Those this CPU runs (AVX2 needs FMA too), narrowest first.
std::vector<FusedLanes> fused_lanes_available();

// Which path CpuOps's compressed attention takes for float32: `automatic` (the default) is the
// fused one on the widest lanes the CPU has, the GEMM path where it has neither. Tests and
// benches set the others to compare (a forced lane set the CPU lacks means automatic); the
// setting is process-wide, so change it only where no attention runs concurrently.
enum class ChunkAttentionPath { automatic, gemm, fused_avx2, fused_avx512 };
void set_chunk_attention_path(ChunkAttentionPath path);

// The lanes a compressed attention call on `dtype` runs the fused path on now, or none for the
// GEMM path (float64 always: it is the tight reference).
std::optional<FusedLanes> chunk_attention_fused_lanes(DType dtype);
bool chunk_attention_runs_fused(DType dtype);

// s[q][j] = sum_k qm[q][k] (kt[k][j] + pt[k][j]), q < m, j < n, k < dh.
void fused_chunk_scores(FusedLanes lanes, int64_t m, int64_t n, int64_t dh, const float* qm,
                        int64_t ldq, const float* kt, int64_t ldk, const float* pt, int64_t ldp,
                        float* s, int64_t lds);

// dq[q][e] += sum_j ds[q][j] (k[j][e] + p[j][e]), q < m, e < dh, j < n.
void fused_chunk_dq(FusedLanes lanes, int64_t m, int64_t n, int64_t dh, const float* ds,
                    int64_t ldds, const float* k, int64_t ldk, const float* p, int64_t ldp,
                    float* dq, int64_t lddq);

// u[j] = sum_q ds[q][j] qm[q], j < n; dk[j] += u[j] and dp[j] += u[j] (either may be null).
void fused_chunk_dkdp(FusedLanes lanes, int64_t m, int64_t n, int64_t dh, const float* ds,
                      int64_t ldds, const float* qm, int64_t ldq, float* dk, int64_t lddk,
                      float* dp, int64_t lddp);

}  // namespace tls::cpu
