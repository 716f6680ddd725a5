// Large host blocks kept for reuse between training steps. glibc serves every block over 32 MiB
// (its mmap ceiling) with a fresh mmap and unmaps it on free, so each step of a long sequence
// would pay the page faults and the kernel's zeroing of every large activation again, a cost
// that grows with T (the tensors of short blocks stay on the heap).
// Freed large blocks are kept by exact size and handed out again; the blocks held, live and
// kept together, never exceed the most the live ones have ever needed.
#pragma once

#include <cstddef>
#include <cstdint>

namespace tls::host_blocks {

// Blocks of at least this many bytes go through the cache; smaller ones are the heap's.
constexpr size_t kMinBytes = size_t{32} << 20;

// A 64-byte aligned block of `bytes` (a multiple of 64, >= kMinBytes); nullptr when out of memory.
void* allocate(size_t bytes);
void release(void* block, size_t bytes);

struct Stats {
  int64_t kept_bytes = 0;  // freed blocks held for reuse
  int64_t reuses = 0;      // allocations served from them
};
Stats stats();

}  // namespace tls::host_blocks
