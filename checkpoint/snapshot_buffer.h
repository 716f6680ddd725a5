// Host memory for a save's snapshot of the state (checkpoint_writer.h's HostBlock). The step that
// saves waits for the copy into it, and the first save of a run touches every page of it for the
// first time: a large buffer is aligned to 2 MiB and asks for transparent huge pages, so that
// first copy takes one page fault per 2 MiB instead of one per 4 KiB (about twice as fast,
// measured in checkpoint/README.md). Later saves reuse the buffers (BackgroundSaver). A buffer
// that receives device tensors is page-locked by the backend once (Ops::pin_host) and released
// by its deleter.
#pragma once

#include <cstddef>
#include <cstdlib>
#include <memory>

namespace tls {

struct FreeSnapshot {
  void (*unpin)(void*) = nullptr;  // set when the buffer is page-locked (Ops::pin_host)
  void operator()(char* p) const {
    if (unpin != nullptr) unpin(p);
    std::free(p);
  }
};
using SnapshotBuffer = std::unique_ptr<char[], FreeSnapshot>;

// At least `bytes` bytes (uninitialised); 2 MiB-aligned from kHugeBytes up. Throws
// std::bad_alloc when memory runs out.
SnapshotBuffer snapshot_buffer(size_t bytes);
constexpr size_t kHugeBytes = size_t{2} << 20;

}  // namespace tls
