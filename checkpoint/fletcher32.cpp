// HDF5 folds both sums to 16 bits every 360 words; a fold keeps the value modulo 65535 and keeps
// it nonzero once it is nonzero. So each sum is its exact total modulo 65535, written as 65535
// instead of 0 unless every word is zero. That lets the words be summed in blocks without the
// running dependency of the textbook loop, which the compiler vectorises (AVX2 where the CPU has
// it).
#include "checkpoint/fletcher32.h"

#include <cstring>

namespace tls {
namespace {

constexpr uint64_t kModulus = 65535;

// Folds x (> 0) to HDF5's representation: 1..65535.
uint32_t folded(uint64_t x) { return static_cast<uint32_t>((x - 1) % kModulus + 1); }

// Sums of `n` (<= kBlock) big-endian 16-bit words: plain = sum w_j, weighted = sum (n - j) w_j.
// With n <= 360 both fit 32 bits, so the loop vectorises on 32-bit lanes.
constexpr size_t kBlock = 360;

template <class Unused = void>
inline void block_sums(const uint8_t* q, uint32_t n, uint32_t& plain, uint32_t& weighted) {
  uint32_t a = 0, b = 0;
  for (uint32_t j = 0; j < n; ++j) {
    uint16_t v;
    std::memcpy(&v, q + 2 * j, 2);
    const uint32_t w = __builtin_bswap16(v);  // big-endian words
    a += w;
    b += (n - j) * w;
  }
  plain = a;
  weighted = b;
}

struct Sums {
  uint64_t sum1 = 0, sum2 = 0;
  bool nonzero = false;
};

template <class Unused = void>
inline void add_words(const uint8_t* p, size_t words, Sums& s) {
  for (size_t first = 0; first < words; first += kBlock) {
    const uint32_t n = static_cast<uint32_t>(words - first < kBlock ? words - first : kBlock);
    uint32_t plain = 0, weighted = 0;
    block_sums(p + 2 * first, n, plain, weighted);
    s.nonzero = s.nonzero || plain != 0;
    s.sum2 = (s.sum2 + n * s.sum1 + weighted) % kModulus;
    s.sum1 = (s.sum1 + plain) % kModulus;
  }
}

#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("avx2"), optimize("O3"))) void add_words_avx2(const uint8_t* p, size_t words,
                                                                    Sums& s) {
  add_words(p, words, s);
}
#endif

}  // namespace

uint32_t fletcher32(const void* data, size_t bytes) {
  const uint8_t* p = static_cast<const uint8_t*>(data);
  Sums s;
#if defined(__x86_64__) && defined(__GNUC__)
  if (__builtin_cpu_supports("avx2"))
    add_words_avx2(p, bytes / 2, s);
  else
    add_words(p, bytes / 2, s);
#else
  add_words(p, bytes / 2, s);
#endif
  if (bytes % 2 != 0) {  // a last odd byte counts as the high byte of a word
    const uint64_t w = uint64_t{p[bytes - 1]} << 8;
    s.nonzero = s.nonzero || w != 0;
    s.sum1 = (s.sum1 + w) % kModulus;
    s.sum2 = (s.sum2 + s.sum1) % kModulus;
  }
  if (!s.nonzero) return 0;
  return (folded(s.sum2 == 0 ? kModulus : s.sum2) << 16) | folded(s.sum1 == 0 ? kModulus : s.sum1);
}

}  // namespace tls
