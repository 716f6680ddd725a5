// HDF5 folds both sums to 16 bits every 360 words; a fold keeps the value modulo 65535 and keeps
// it nonzero once it is nonzero. So each sum is its exact total modulo 65535, written as 65535
// instead of 0 unless every word is zero. That lets the words be summed in long blocks with
// 64-bit accumulators, which the compiler vectorises.
#include "checkpoint/fletcher32.h"

namespace tls {
namespace {

constexpr uint64_t kModulus = 65535;

// Folds x (> 0) to HDF5's representation: 1..65535.
uint32_t folded(uint64_t x) { return static_cast<uint32_t>((x - 1) % kModulus + 1); }

}  // namespace

uint32_t fletcher32(const void* data, size_t bytes) {
  const uint8_t* p = static_cast<const uint8_t*>(data);
  const size_t words = bytes / 2;
  // sum1 = sum of the words; sum2 = sum of the running sum1 after each word.
  uint64_t sum1 = 0, sum2 = 0;
  bool nonzero = false;
  constexpr size_t kBlock = 4096;  // (n - j) * word < 2^28; 4096 of them < 2^40
  for (size_t first = 0; first < words; first += kBlock) {
    const size_t n = words - first < kBlock ? words - first : kBlock;
    const uint8_t* q = p + 2 * first;
    uint64_t plain = 0, weighted = 0;
    for (size_t j = 0; j < n; ++j) {
      const uint64_t w = (uint64_t{q[2 * j]} << 8) | q[2 * j + 1];
      plain += w;
      weighted += (n - j) * w;
    }
    nonzero = nonzero || plain != 0;
    sum2 = (sum2 + n * sum1 + weighted) % kModulus;
    sum1 = (sum1 + plain) % kModulus;
  }
  if (bytes % 2 != 0) {  // a last odd byte counts as the high byte of a word
    const uint64_t w = uint64_t{p[bytes - 1]} << 8;
    nonzero = nonzero || w != 0;
    sum1 = (sum1 + w) % kModulus;
    sum2 = (sum2 + sum1) % kModulus;
  }
  if (!nonzero) return 0;
  return (folded(sum2 == 0 ? kModulus : sum2) << 16) | folded(sum1 == 0 ? kModulus : sum1);
}

}  // namespace tls
