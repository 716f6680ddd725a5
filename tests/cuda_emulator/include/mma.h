// The CUDA emulator's stand-in for <mma.h>: the WMMA API (nvcuda::wmma) for 16x16x16 tiles with
// bfloat16 operands and float32 accumulators, as warp-collective operations.
//
// A fragment's elements x[0..8) of each of the 32 lanes hold the 256 elements of its 16x16 tile
// in a layout of the emulator's own: a fixed scrambled permutation, different for matrix_a,
// matrix_b and the accumulator, which is neither the hardware's nor row / column order. Code
// that reads or writes fragment elements by an assumed position (instead of going through
// load_matrix_sync / store_matrix_sync) computes garbage here and fails its tests, as it would
// on the next GPU generation. Element-wise operations on all x[] of a fragment (scaling,
// conversion) are layout-free and fine.
//
// Every operation is warp-collective: all 32 lanes must call it (else the emulator aborts, as a
// GPU would hang), with the same pointer and leading dimension (checked). Pointers must be
// 256-bit aligned and leading dimensions a multiple of 16 bytes, as the API requires.
// mma_sync multiplies bf16 operands exactly (a product of two 8-bit mantissas fits a float) and
// accumulates each output's 16 products in float32 in k order, then adds C.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>

namespace tls_emu {
// Warp-collective exchange: publishes this lane's `mine` and waits for every lane of the warp;
// returns the 32 lanes' pointers (index = lane), valid until warp_collective_end.
const void* const* warp_collective_begin(const void* mine, const char* what);
void warp_collective_end();
[[noreturn]] void device_fault(const std::string& what);
int lane_id();
}  // namespace tls_emu

namespace nvcuda::wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

namespace detail {

// The element (lane, i) of a fragment holds tile element perm(lane * 8 + i) = row * 16 + col:
// an affine permutation of 0..255 (odd multiplier), one per fragment kind.
template <class Use>
constexpr int kMul = std::is_same_v<Use, matrix_a>   ? 97
                     : std::is_same_v<Use, matrix_b> ? 61
                                                     : 173;
template <class Use>
constexpr int kAdd = std::is_same_v<Use, matrix_a>   ? 13
                     : std::is_same_v<Use, matrix_b> ? 101
                                                     : 7;
template <class Use>
constexpr int tile_index(int lane, int i) {
  return ((lane * 8 + i) * kMul<Use> + kAdd<Use>)&255;
}
// Where tile element e lives: lane * 8 + i.
template <class Use>
struct Inverse {
  int at[256];
  constexpr Inverse() : at() {
    for (int k = 0; k < 256; ++k) at[tile_index<Use>(k / 8, k % 8)] = k;
  }
};
template <class Use>
constexpr Inverse<Use> kInverse{};

inline float to_float(float v) { return v; }
inline float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
template <class T>
T from_float(float v) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>)
    return __float2bfloat16_rn(v);
  else
    return v;
}

struct MemArgs {
  const void* ptr;
  unsigned ldm;
  int layout;
};

// Checks that all lanes pass the same (ptr, ldm, layout) and that they meet the API's rules.
inline void check_uniform(const MemArgs& mine, size_t esize, const char* what) {
  const void* const* all = tls_emu::warp_collective_begin(&mine, what);
  for (int l = 0; l < 32; ++l) {
    const auto* o = static_cast<const MemArgs*>(all[l]);
    if (o->ptr != mine.ptr || o->ldm != mine.ldm || o->layout != mine.layout)
      tls_emu::device_fault(std::string(what) + ": lanes passed different pointers, leading " +
                            "dimensions or layouts (they must be warp-uniform)");
  }
  tls_emu::warp_collective_end();
  if (reinterpret_cast<uintptr_t>(mine.ptr) % 32 != 0)
    tls_emu::device_fault(std::string(what) + ": the pointer is not 256-bit aligned");
  if ((mine.ldm * esize) % 16 != 0 || mine.ldm < 16)
    tls_emu::device_fault(std::string(what) + ": ldm " + std::to_string(mine.ldm) +
                          " is not a multiple of 16 bytes of at least 16 elements");
}

}  // namespace detail

template <class Use, int M, int N, int K, class T, class Layout = void>
class fragment {
  static_assert(M == 16 && N == 16 && K == 16, "the emulator models 16x16x16 WMMA tiles only");
  static_assert(std::is_same_v<Use, accumulator> ? std::is_same_v<T, float>
                                                 : std::is_same_v<T, __nv_bfloat16>,
                "the emulator models bf16 operands with float accumulators");

 public:
  using element_type = T;
  using storage_element_type = T;
  enum { num_elements = 8 };
  T x[num_elements];
};

template <class Use, int M, int N, int K, class T, class L>
inline void fill_fragment(fragment<Use, M, N, K, T, L>& f, T v) {
  for (auto& e : f.x) e = v;
}
template <class Use, int M, int N, int K, class T, class L, class V,
          class = std::enable_if_t<!std::is_same_v<T, V>>>
inline void fill_fragment(fragment<Use, M, N, K, T, L>& f, V v) {
  fill_fragment(f, detail::from_float<T>(static_cast<float>(v)));
}

// Operands: matrix_a is M x K, matrix_b is K x N; element (r, c) at p[r * ldm + c] (row_major)
// or p[c * ldm + r] (col_major).
template <class Use, class T, class L>
inline void load_matrix_sync(fragment<Use, 16, 16, 16, T, L>& f, const T* p, unsigned ldm) {
  static_assert(!std::is_same_v<Use, accumulator>, "an accumulator load takes a layout_t");
  constexpr bool row = std::is_same_v<L, row_major>;
  detail::check_uniform({p, ldm, row ? 0 : 1}, sizeof(T), "wmma::load_matrix_sync");
  const int lane = tls_emu::lane_id();
  for (int i = 0; i < 8; ++i) {
    const int e = detail::tile_index<Use>(lane, i), r = e / 16, c = e % 16;
    f.x[i] = row ? p[r * ldm + c] : p[c * ldm + r];
  }
}

template <class T>
inline void load_matrix_sync(fragment<accumulator, 16, 16, 16, T>& f, const T* p, unsigned ldm,
                             layout_t layout) {
  detail::check_uniform({p, ldm, static_cast<int>(layout)}, sizeof(T), "wmma::load_matrix_sync");
  const int lane = tls_emu::lane_id();
  for (int i = 0; i < 8; ++i) {
    const int e = detail::tile_index<accumulator>(lane, i), r = e / 16, c = e % 16;
    f.x[i] = layout == mem_row_major ? p[r * ldm + c] : p[c * ldm + r];
  }
}

template <class T>
inline void store_matrix_sync(T* p, const fragment<accumulator, 16, 16, 16, T>& f, unsigned ldm,
                              layout_t layout) {
  detail::check_uniform({p, ldm, static_cast<int>(layout)}, sizeof(T), "wmma::store_matrix_sync");
  const int lane = tls_emu::lane_id();
  for (int i = 0; i < 8; ++i) {
    const int e = detail::tile_index<accumulator>(lane, i), r = e / 16, c = e % 16;
    (layout == mem_row_major ? p[r * ldm + c] : p[c * ldm + r]) = f.x[i];
  }
}

// D = A B + C over the warp's fragments (D may be C).
template <class TA, class LA, class LB>
inline void mma_sync(fragment<accumulator, 16, 16, 16, float>& d,
                     const fragment<matrix_a, 16, 16, 16, TA, LA>& a,
                     const fragment<matrix_b, 16, 16, 16, TA, LB>& b,
                     const fragment<accumulator, 16, 16, 16, float>& c) {
  struct Operands {
    const TA *a, *b;
    const float* c;
  } mine{a.x, b.x, c.x};
  const void* const* all = tls_emu::warp_collective_begin(&mine, "wmma::mma_sync");
  auto lane_ops = [&](int l) { return static_cast<const Operands*>(all[l]); };
  auto A = [&](int r, int k) {
    const int at = detail::kInverse<matrix_a>.at[r * 16 + k];
    return detail::to_float(lane_ops(at / 8)->a[at % 8]);
  };
  auto B = [&](int k, int n) {
    const int at = detail::kInverse<matrix_b>.at[k * 16 + n];
    return detail::to_float(lane_ops(at / 8)->b[at % 8]);
  };
  const int lane = tls_emu::lane_id();
  float out[8];
  for (int i = 0; i < 8; ++i) {
    const int e = detail::tile_index<accumulator>(lane, i), r = e / 16, n = e % 16;
    float acc = 0.0f;
    for (int k = 0; k < 16; ++k) acc += A(r, k) * B(k, n);
    const int at = detail::kInverse<accumulator>.at[e];
    out[i] = acc + lane_ops(at / 8)->c[at % 8];
  }
  tls_emu::warp_collective_end();  // every lane has read C before any lane writes D
  for (int i = 0; i < 8; ++i) d.x[i] = out[i];
}

}  // namespace nvcuda::wmma
