// snapshot_buffer over aligned_alloc and madvise (a hint: ignored where huge pages are off).
#include "checkpoint/snapshot_buffer.h"

#include <sys/mman.h>

#include <new>

namespace tls {

SnapshotBuffer snapshot_buffer(size_t bytes) {
  if (bytes < kHugeBytes) {
    SnapshotBuffer small(static_cast<char*>(std::malloc(bytes == 0 ? 1 : bytes)));
    if (small == nullptr) throw std::bad_alloc();
    return small;
  }
  const size_t rounded = (bytes + kHugeBytes - 1) / kHugeBytes * kHugeBytes;
  SnapshotBuffer big(static_cast<char*>(std::aligned_alloc(kHugeBytes, rounded)));
  if (big == nullptr) throw std::bad_alloc();
#ifdef MADV_HUGEPAGE
  ::madvise(big.get(), rounded, MADV_HUGEPAGE);
#endif
  return big;
}

}  // namespace tls
