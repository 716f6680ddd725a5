// The compressed attention's three products with the positional term folded into the key, on
// AVX-512 lanes (chunk_attention.cpp, fused path).
//
// The c query rows of one chunk share their relative ids: slot j has id top - j for all of
// them. With pos stored reversed (and its clamped ids as extra leading rows), slot j's positional
// row is row m0 + j: a contiguous shift. So the chunk's keys are khat[j] + pos_rev[m0 + j], and
//   scores = Q (K + P)^T,   dQ += dS (K + P),   dK += dS^T Q and dP += dS^T Q (the same product)
// are one product each instead of two (the GEMM path scores every row against every id of a
// block and shifts the scores). The key sum is formed in registers, never stored.
//
// Layouts: row-major with leading dimensions; `kt`/`pt` are the transposed tables ([dh][slots],
// [dh][rows of pos_rev]) the scores kernel reads along slots. Callers must check
// chunk_fused_kernels_available() first.
#pragma once

#include <cstdint>

#include "runtime/tensor.h"

namespace tls::cpu {

// Whether this CPU runs the kernels below (AVX-512F).
bool chunk_fused_kernels_available();

// Which path CpuOps's compressed attention takes for float32: `automatic` (the default) is the
// fused one where the CPU has AVX-512. Tests and benches set it to compare the two; it is
// process-wide, so set it only where no attention runs concurrently.
enum class ChunkAttentionPath { automatic, gemm, fused };
void set_chunk_attention_path(ChunkAttentionPath path);

// Whether a compressed attention call on `dtype` runs the fused path now (float64 never does:
// it is the tight reference, on the GEMM path).
bool chunk_attention_runs_fused(DType dtype);

// s[q][j] = sum_k qm[q][k] (kt[k][j] + pt[k][j]), q < m, j < n, k < dh.
void fused_chunk_scores(int64_t m, int64_t n, int64_t dh, const float* qm, int64_t ldq,
                        const float* kt, int64_t ldk, const float* pt, int64_t ldp, float* s,
                        int64_t lds);

// dq[q][e] += sum_j ds[q][j] (k[j][e] + p[j][e]), q < m, e < dh, j < n.
void fused_chunk_dq(int64_t m, int64_t n, int64_t dh, const float* ds, int64_t ldds, const float* k,
                    int64_t ldk, const float* p, int64_t ldp, float* dq, int64_t lddq);

// u[j] = sum_q ds[q][j] qm[q], j < n; dk[j] += u[j] and dp[j] += u[j] (either may be null).
void fused_chunk_dkdp(int64_t m, int64_t n, int64_t dh, const float* ds, int64_t ldds,
                      const float* qm, int64_t ldq, float* dk, int64_t lddk, float* dp,
                      int64_t lddp);

}  // namespace tls::cpu
