// The CUDA emulator's runtime (see README.md): device memory, streams and events, and kernel
// launches. Eight emulated devices, as on a node of eight GPUs (each process has its own: the
// emulator does not share memory between processes); they differ only in their index. Work runs
// synchronously at the call, so stream order holds trivially; what the emulator checks instead is
// what a GPU run would trip over:
//  - device memory lives in its own pages, inaccessible to the host outside emulated device
//    work, with an inaccessible page after each allocation and fresh allocations filled with
//    0xff bytes (NaN in floating point) instead of zeros. Inside device work an allocation is
//    opened when first touched (the fault handler makes it accessible) and closed again when
//    the work ends, so the cost follows the allocations a kernel uses, not all live ones;
//  - a launch's configuration (block and grid limits, dynamic shared memory over 48 KiB only
//    after cudaFuncSetAttribute), its stream, and pointer arguments outside device memory;
//  - __syncthreads reached by only part of a block, warp shuffles by only part of a warp.
// Each CUDA thread of a block is a fiber that runs until it reaches a barrier; the
// fibers of a block run in alternating forward and reverse order between barriers, so code that
// reads shared memory another thread writes without a barrier in between sees stale data.
#include <dlfcn.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "emulator_internal.h"
#include "include/cuda_runtime.h"

thread_local uint3 threadIdx;
thread_local uint3 blockIdx;
thread_local dim3 blockDim;
thread_local dim3 gridDim;

struct CUstream_st {
  unsigned flags = 0;
};
struct CUevent_st {
  unsigned flags = 0;
};
struct CUmemPoolHandle_st {
  uint64_t release_threshold = 0;
  uint64_t used = 0, used_high = 0;  // bytes of its live allocations, and their high-water mark
};

namespace tls_emu {
namespace {

constexpr size_t kPage = 4096;
// The stream cudaMalloc passes to cudaMallocAsync: its memory is not the pool's.
const cudaStream_t kUnpooled = reinterpret_cast<cudaStream_t>(uintptr_t{1});
constexpr int kMaxDevices = 8;
// TLS_CUDA_EMULATOR_DEVICES (1-8, default 8) emulates a node with fewer GPUs.
int device_count() {
  static const int n = [] {
    const char* env = std::getenv("TLS_CUDA_EMULATOR_DEVICES");
    const int v = env ? std::atoi(env) : kMaxDevices;
    return v >= 1 && v <= kMaxDevices ? v : kMaxDevices;
  }();
  return n;
}
constexpr size_t kTotalMemory = size_t{80} << 30;  // reported by cudaMemGetInfo
constexpr int kSharedOptin = 232448;               // H100 / H200: 227 KiB per block
constexpr size_t kDefaultSharedLimit = 48 * 1024;

struct Allocation {
  int device;
  bool pooled;  // from cudaMallocAsync (counted by the device's pool), not cudaMalloc
  const char* data;
  char* map_base;
  size_t map_bytes;  // data pages + the guard page
  size_t bytes;      // asked for
};

struct State {
  std::recursive_mutex mutex;
  std::map<const char*, Allocation> allocations;  // by data start
  size_t live_bytes = 0;
  int access_depth = 0;
  std::vector<const char*> opened;  // allocations made accessible in the current device work
  std::set<CUstream_st*> streams;
  std::set<CUevent_st*> events;
  std::map<const void*, size_t> registered_host;  // cudaHostRegister: start -> bytes
  std::map<const void*, int>
      shared_limits;  // kernel -> cudaFuncAttributeMaxDynamicSharedMemorySize
  CUmemPoolHandle_st pools[kMaxDevices];
};

State& state() {
  static State* s = [] {
    auto* st = new State;         // never destroyed: Storage deleters run during exit
    st->opened.reserve(1 << 16);  // the fault handler appends without allocating
    return st;
  }();
  return *s;
}

thread_local cudaError_t g_last_error = cudaSuccess;
thread_local int g_device = 0;

cudaError_t set_error(cudaError_t e) {
  if (e != cudaSuccess) g_last_error = e;
  return e;
}

size_t round_up(size_t n, size_t to) { return (n + to - 1) / to * to; }

// The allocation containing ptr, or null.
const Allocation* find(const void* ptr) {
  auto& allocs = state().allocations;
  const char* p = static_cast<const char*>(ptr);
  auto it = allocs.upper_bound(p);
  if (it == allocs.begin()) return nullptr;
  --it;
  return p < it->first + std::max<size_t>(it->second.bytes, 1) ? &it->second : nullptr;
}

void open_allocation(const Allocation& a) {
  if (mprotect(a.map_base, a.map_bytes - kPage, PROT_READ | PROT_WRITE) != 0) {
    std::perror("cuda emulator: mprotect");
    std::abort();
  }
  state().opened.push_back(a.data);
}

void on_segv(int sig, siginfo_t* info, void*) {
  // Device work touching a closed allocation: open it and retry the access.
  if (state().access_depth > 0)
    if (const Allocation* a = find(info->si_addr)) {
      open_allocation(*a);
      return;
    }
  char msg[256];
  const int n = std::snprintf(
      msg, sizeof msg, "cuda emulator: segmentation fault at %p: %s\n", info->si_addr,
      state().access_depth > 0 ? "device code or a copy went outside a device allocation"
                               : "host code touched device memory (or a plain host fault)");
  if (n > 0) (void)!write(2, msg, static_cast<size_t>(n));
  signal(sig, SIG_DFL);
  raise(sig);
}

void install_fault_handler() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa {};
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigaction(SIGSEGV, &sa, nullptr);
  });
}

bool valid_stream(cudaStream_t s) { return s == nullptr || state().streams.count(s) > 0; }

// ---- kernel execution --------------------------------------------------------------------------

enum class FiberState { ready, block_barrier, warp_barrier, done };

// The fiber switch: saves the callee-saved registers and the floating-point control words on
// the current stack, stores the stack pointer in *save and continues on the stack `next` (a
// hand-written x86-64 System V switch: ucontext's swapcontext makes two system calls per switch,
// which made them most of the emulator's time).
extern "C" void tls_emu_switch(void** save, void* next);
asm(R"(
.text
.globl tls_emu_switch
.type tls_emu_switch, @function
tls_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
.size tls_emu_switch, .-tls_emu_switch
.section .note.GNU-stack,"",@progbits
.text
)");

struct Fiber {
  void* sp = nullptr;  // saved stack pointer while not running
  FiberState state = FiberState::ready;
};

void fiber_main();

// A fresh stack whose first switch "returns" into fiber_main with the stack aligned as after a
// call: [control words][r15 r14 r13 r12 rbx rbp][return address = fiber_main].
void* initial_stack(char* stack_base, size_t bytes) {
  auto top = reinterpret_cast<uintptr_t>(stack_base + bytes) & ~uintptr_t{15};
  auto* slots = reinterpret_cast<uint64_t*>(top - 72);
  const uint32_t mxcsr = 0x1f80;  // the defaults: round to nearest, exceptions masked
  const uint16_t fpu_cw = 0x037f;
  std::memcpy(&slots[0], &mxcsr, 4);
  std::memcpy(reinterpret_cast<char*>(&slots[0]) + 4, &fpu_cw, 2);
  for (int i = 1; i <= 6; ++i) slots[i] = 0;
  slots[7] = reinterpret_cast<uint64_t>(&fiber_main);
  return slots;
}

constexpr size_t kStackBytes = 256 * 1024;

// Fiber stacks (with a guard page below each), kept for the next block.
struct StackPool {
  std::vector<char*> stacks;
  char* get(size_t i) {
    while (stacks.size() <= i) {
      void* m = mmap(nullptr, kStackBytes + kPage, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
      if (m == MAP_FAILED) device_fault("cannot map a fiber stack");
      mprotect(m, kPage, PROT_NONE);
      stacks.push_back(static_cast<char*>(m) + kPage);
    }
    return stacks[i];
  }
};

struct Block {
  const LaunchConfig* config;
  void (*body)(void*);
  void* context;
  int n_threads = 0;
  std::vector<Fiber> fibers;
  std::vector<uint64_t> lanes;         // warp_xor_exchange slots, one per thread
  std::vector<const void*> published;  // warp_collective_begin slots, one per thread
  void* scheduler = nullptr;           // the scheduler's stack pointer while a fiber runs
  int current = 0;
  std::vector<unsigned char> shared;
};

thread_local Block* g_block = nullptr;
thread_local StackPool g_stacks;

std::string where(const LaunchConfig& c) {
  return std::string("the kernel launched at ") + c.where.file_name() + ":" +
         std::to_string(c.where.line()) + ", block (" + std::to_string(blockIdx.x) + "," +
         std::to_string(blockIdx.y) + "," + std::to_string(blockIdx.z) + ")";
}

void set_thread_index(const Block& b, int i) {
  const unsigned bx = b.config->block.x, by = b.config->block.y;
  const unsigned u = static_cast<unsigned>(i);
  threadIdx = {u % bx, (u / bx) % by, u / (bx * by)};
}

void fiber_main() {
  Block* b = g_block;
  b->body(b->context);
  Fiber& f = b->fibers[static_cast<size_t>(b->current)];
  f.state = FiberState::done;
  tls_emu_switch(&f.sp, b->scheduler);  // never resumed
  std::abort();
}

void yield(FiberState s) {
  Block* b = g_block;
  Fiber& f = b->fibers[static_cast<size_t>(b->current)];
  f.state = s;
  tls_emu_switch(&f.sp, b->scheduler);
}

void run_block(Block& b) {
  const int n = b.n_threads;
  b.fibers.assign(static_cast<size_t>(n), Fiber{});
  b.lanes.assign(static_cast<size_t>(n), 0);
  b.published.assign(static_cast<size_t>(n), nullptr);
  for (int i = 0; i < n; ++i)
    b.fibers[static_cast<size_t>(i)].sp =
        initial_stack(g_stacks.get(static_cast<size_t>(i)), kStackBytes);
  const int n_warps = (n + 31) / 32;
  for (int round = 0;; ++round) {
    bool ran = false;
    for (int k = 0; k < n; ++k) {
      const int i = round % 2 == 0 ? k : n - 1 - k;
      Fiber& f = b.fibers[static_cast<size_t>(i)];
      if (f.state != FiberState::ready) continue;
      b.current = i;
      set_thread_index(b, i);
      tls_emu_switch(&b.scheduler, f.sp);
      ran = true;
    }
    int done = 0, at_block = 0, at_warp = 0;
    for (const Fiber& f : b.fibers) {
      done += f.state == FiberState::done;
      at_block += f.state == FiberState::block_barrier;
      at_warp += f.state == FiberState::warp_barrier;
    }
    if (done == n) return;
    if (ran) continue;
    // Nobody can run: release the warps whose lanes all wait at a shuffle, else the barrier.
    bool released = false;
    for (int w = 0; w < n_warps; ++w) {
      int waiting = 0, lanes = 0;
      for (int i = w * 32; i < std::min(n, w * 32 + 32); ++i, ++lanes)
        waiting += b.fibers[static_cast<size_t>(i)].state == FiberState::warp_barrier;
      if (waiting == 0) continue;
      if (waiting != lanes)
        device_fault("a warp shuffle or WMMA operation was reached by " + std::to_string(waiting) +
                     " of the " + std::to_string(lanes) + " lanes of warp " + std::to_string(w) +
                     " in " + where(*b.config));
      for (int i = w * 32; i < w * 32 + lanes; ++i)
        b.fibers[static_cast<size_t>(i)].state = FiberState::ready;
      released = true;
    }
    if (released) continue;
    if (at_block + done == n && done == 0) {
      for (Fiber& f : b.fibers) f.state = FiberState::ready;
      continue;
    }
    device_fault("__syncthreads was reached by " + std::to_string(at_block) + " of " +
                 std::to_string(n) + " threads (" + std::to_string(done) + " had exited, " +
                 std::to_string(at_warp) + " wait at a warp shuffle) in " + where(*b.config));
  }
}

}  // namespace

// ---- shared with cublas.cpp ---------------------------------------------------------------------

DeviceAccess::DeviceAccess() {
  std::lock_guard<std::recursive_mutex> lock(state().mutex);
  ++state().access_depth;
}

DeviceAccess::~DeviceAccess() {
  std::lock_guard<std::recursive_mutex> lock(state().mutex);
  if (--state().access_depth > 0) return;
  for (const char* data : state().opened) {
    auto it = state().allocations.find(data);  // freed since: nothing to close
    if (it != state().allocations.end())
      mprotect(it->second.map_base, it->second.map_bytes - kPage, PROT_NONE);
  }
  state().opened.clear();
}

bool is_device_range(const void* ptr, size_t bytes) {
  std::lock_guard<std::recursive_mutex> lock(state().mutex);
  const Allocation* a = find(ptr);
  if (!a) return false;
  return static_cast<const char*>(ptr) + bytes <= a->data + a->bytes;
}

bool is_device_pointer(const void* ptr) { return is_device_range(ptr, 0); }

void open_range(const void* ptr) {
  std::lock_guard<std::recursive_mutex> lock(state().mutex);
  if (state().access_depth == 0) device_fault("open_range outside device work");
  if (const Allocation* a = find(ptr)) open_allocation(*a);
}

void device_fault(const std::string& what) {
  std::fprintf(stderr, "cuda emulator: %s\n", what.c_str());
  std::fflush(stderr);
  std::abort();
}

// ---- device side
// ---------------------------------------------------------------------------------

uint64_t warp_xor_exchange(unsigned mask, uint64_t bits, int lane_mask, int width) {
  Block* b = g_block;
  if (!b) device_fault("a warp shuffle outside a kernel");
  if (mask != 0xffffffffu) device_fault("warp shuffles with a partial lane mask are not emulated");
  const int i = b->current, w = i / 32;
  if (w * 32 + 32 > b->n_threads)
    device_fault("a full-mask warp shuffle in the partial warp " + std::to_string(w) + " of " +
                 where(*b->config));
  b->lanes[static_cast<size_t>(i)] = bits;
  yield(FiberState::warp_barrier);
  const int lane = i % 32, partner = lane ^ lane_mask;
  const int src_lane = partner / width == lane / width ? partner : lane;
  const uint64_t out = b->lanes[static_cast<size_t>(w * 32 + src_lane)];
  yield(FiberState::warp_barrier);  // nobody overwrites a slot before every lane has read
  return out;
}

const void* const* warp_collective_begin(const void* mine, const char* what) {
  Block* b = g_block;
  if (!b) device_fault(std::string(what) + " outside a kernel");
  const int i = b->current, w = i / 32;
  if (w * 32 + 32 > b->n_threads)
    device_fault(std::string(what) + " (warp-collective) in the partial warp " + std::to_string(w) +
                 " of " + where(*b->config));
  b->published[static_cast<size_t>(i)] = mine;
  yield(FiberState::warp_barrier);
  return b->published.data() + w * 32;
}

void warp_collective_end() { yield(FiberState::warp_barrier); }

int lane_id() {
  if (!g_block) device_fault("lane_id outside a kernel");
  return g_block->current % 32;
}

unsigned char* dynamic_shared() {
  if (!g_block) device_fault("dynamic shared memory used outside a kernel");
  // 128-byte aligned, as a GPU places it (WMMA needs 256-bit aligned tiles).
  const auto at = reinterpret_cast<uintptr_t>(g_block->shared.data());
  return g_block->shared.data() + ((128 - at % 128) % 128);
}

cudaError_t set_function_attribute(const void* func, cudaFuncAttribute attr, int value) {
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize || value < 0 || value > kSharedOptin)
    return set_error(cudaErrorInvalidValue);
  std::lock_guard<std::recursive_mutex> lock(state().mutex);
  state().shared_limits[func] = value;
  return cudaSuccess;
}

void run_grid(const LaunchConfig& c, const void* kernel, void (*body)(void*), void* context,
              const void* const* pointers, int n_pointers) {
  install_fault_handler();
  const dim3 g = c.grid, bl = c.block;
  const uint64_t threads = uint64_t{bl.x} * bl.y * bl.z;
  if (threads == 0 || threads > 1024 || bl.x > 1024 || bl.y > 1024 || bl.z > 64 || g.x == 0 ||
      g.y == 0 || g.z == 0 || g.x > 0x7fffffffu || g.y > 65535 || g.z > 65535) {
    set_error(cudaErrorInvalidConfiguration);
    return;
  }
  {
    std::lock_guard<std::recursive_mutex> lock(state().mutex);
    size_t limit = kDefaultSharedLimit;
    auto it = state().shared_limits.find(kernel);
    if (it != state().shared_limits.end()) limit = std::max<size_t>(limit, it->second);
    if (c.shared_bytes > limit || !valid_stream(c.stream)) {
      set_error(c.shared_bytes > limit ? cudaErrorInvalidValue : cudaErrorInvalidResourceHandle);
      return;
    }
  }
  for (int i = 0; i < n_pointers; ++i)
    if (pointers[i] && !is_device_pointer(pointers[i]))
      device_fault("argument " + std::to_string(i + 1) + " (a pointer, " +
                   std::to_string(reinterpret_cast<uintptr_t>(pointers[i])) +
                   ") of the kernel launched at " + c.where.file_name() + ":" +
                   std::to_string(c.where.line()) + " is not device memory");
  if (g_block) device_fault("a kernel launched from device code");
  DeviceAccess access;
  Block b;
  b.config = &c;
  b.body = body;
  b.context = context;
  b.n_threads = static_cast<int>(threads);
  b.shared.assign(std::max<size_t>(c.shared_bytes, 1) + 128, 0xff);  // + alignment
  g_block = &b;
  gridDim = g;
  blockDim = bl;
  for (unsigned z = 0; z < g.z; ++z)
    for (unsigned y = 0; y < g.y; ++y)
      for (unsigned x = 0; x < g.x; ++x) {
        blockIdx = {x, y, z};
        run_block(b);
      }
  g_block = nullptr;
}

}  // namespace tls_emu

using tls_emu::set_error;
using tls_emu::state;

void __syncthreads() {
  if (!tls_emu::g_block) tls_emu::device_fault("__syncthreads outside a kernel");
  tls_emu::yield(tls_emu::FiberState::block_barrier);
}

// ---- the runtime API
// -----------------------------------------------------------------------------

cudaError_t cudaGetDeviceCount(int* count) {
  *count = tls_emu::device_count();
  return cudaSuccess;
}

cudaError_t cudaSetDevice(int device) {
  if (device < 0 || device >= tls_emu::device_count()) return set_error(cudaErrorInvalidDevice);
  tls_emu::g_device = device;
  return cudaSuccess;
}

cudaError_t cudaGetDevice(int* device) {
  *device = tls_emu::g_device;
  return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  if (device < 0 || device >= tls_emu::device_count()) return set_error(cudaErrorInvalidDevice);
  switch (attr) {
    case cudaDevAttrMaxSharedMemoryPerBlock:
      *value = static_cast<int>(tls_emu::kDefaultSharedLimit);
      return cudaSuccess;
    case cudaDevAttrMultiProcessorCount:
      *value = 132;
      return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin:
      *value = tls_emu::kSharedOptin;
      return cudaSuccess;
  }
  return set_error(cudaErrorInvalidValue);
}

cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }

cudaError_t cudaGetLastError() {
  const cudaError_t e = tls_emu::g_last_error;
  tls_emu::g_last_error = cudaSuccess;
  return e;
}

const char* cudaGetErrorName(cudaError_t error) {
  switch (error) {
    case cudaSuccess:
      return "cudaSuccess";
    case cudaErrorInvalidValue:
      return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation:
      return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration:
      return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidPitchValue:
      return "cudaErrorInvalidPitchValue";
    case cudaErrorInvalidDevicePointer:
      return "cudaErrorInvalidDevicePointer";
    case cudaErrorInvalidMemcpyDirection:
      return "cudaErrorInvalidMemcpyDirection";
    case cudaErrorInvalidDevice:
      return "cudaErrorInvalidDevice";
    case cudaErrorInvalidResourceHandle:
      return "cudaErrorInvalidResourceHandle";
    case cudaErrorIllegalAddress:
      return "cudaErrorIllegalAddress";
    case cudaErrorLaunchFailure:
      return "cudaErrorLaunchFailure";
  }
  return "cudaErrorUnknown";
}

const char* cudaGetErrorString(cudaError_t error) {
  switch (error) {
    case cudaSuccess:
      return "no error";
    case cudaErrorInvalidValue:
      return "invalid argument";
    case cudaErrorMemoryAllocation:
      return "out of memory";
    case cudaErrorInvalidConfiguration:
      return "invalid configuration argument";
    case cudaErrorInvalidPitchValue:
      return "invalid pitch argument";
    case cudaErrorInvalidDevicePointer:
      return "invalid device pointer";
    case cudaErrorInvalidMemcpyDirection:
      return "invalid copy direction for memcpy";
    case cudaErrorInvalidDevice:
      return "invalid device ordinal";
    case cudaErrorInvalidResourceHandle:
      return "invalid resource handle";
    case cudaErrorIllegalAddress:
      return "an illegal memory access was encountered";
    case cudaErrorLaunchFailure:
      return "unspecified launch failure";
  }
  return "unknown error";
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned flags) {
  std::lock_guard<std::recursive_mutex> lock(state().mutex);
  *stream = new CUstream_st{flags};
  state().streams.insert(*stream);
  return cudaSuccess;
}

cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  std::lock_guard<std::recursive_mutex> lock(state().mutex);
  if (!stream || !state().streams.erase(stream)) return set_error(cudaErrorInvalidResourceHandle);
  delete stream;
  return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
  std::lock_guard<std::recursive_mutex> lock(state().mutex);
  return tls_emu::valid_stream(stream) ? cudaSuccess : set_error(cudaErrorInvalidResourceHandle);
}

cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned) {
  std::lock_guard<std::recursive_mutex> lock(state().mutex);
  if (!tls_emu::valid_stream(stream) || !state().events.count(event))
    return set_error(cudaErrorInvalidResourceHandle);
  return cudaSuccess;
}

cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned flags) {
  std::lock_guard<std::recursive_mutex> lock(state().mutex);
  *event = new CUevent_st{flags};
  state().events.insert(*event);
  return cudaSuccess;
}

cudaError_t cudaEventDestroy(cudaEvent_t event) {
  std::lock_guard<std::recursive_mutex> lock(state().mutex);
  if (!state().events.erase(event)) return set_error(cudaErrorInvalidResourceHandle);
  delete event;
  return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
  std::lock_guard<std::recursive_mutex> lock(state().mutex);
  if (!state().events.count(event) || !tls_emu::valid_stream(stream))
    return set_error(cudaErrorInvalidResourceHandle);
  return cudaSuccess;
}

cudaError_t cudaMallocAsync(void** ptr, size_t bytes, cudaStream_t stream) {
  using tls_emu::kPage;
  std::lock_guard<std::recursive_mutex> lock(state().mutex);
  if (!ptr || (stream != tls_emu::kUnpooled && !tls_emu::valid_stream(stream)))
    return set_error(cudaErrorInvalidValue);
  if (state().live_bytes + bytes > tls_emu::kTotalMemory)
    return set_error(cudaErrorMemoryAllocation);
  tls_emu::install_fault_handler();
  // Data ends (256-byte aligned) just before an inaccessible guard page.
  const size_t padded = tls_emu::round_up(std::max<size_t>(bytes, 1), 256);
  const size_t data_pages = tls_emu::round_up(padded, kPage);
  void* m = mmap(nullptr, data_pages + kPage, PROT_NONE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (m == MAP_FAILED) return set_error(cudaErrorMemoryAllocation);
  char* base = static_cast<char*>(m);
  char* data = base + data_pages - padded;
  state().allocations[data] = {
      tls_emu::g_device, stream != tls_emu::kUnpooled, data, base, data_pages + kPage, bytes};
  state().live_bytes += bytes;
  if (stream != tls_emu::kUnpooled) {
    CUmemPoolHandle_st& pool = state().pools[tls_emu::g_device];
    pool.used += bytes;
    pool.used_high = std::max(pool.used_high, pool.used);
  }
  mprotect(base, data_pages, PROT_READ | PROT_WRITE);
  std::memset(data, 0xff, padded);  // uninitialised device memory is not zero
  mprotect(base, data_pages, PROT_NONE);
  *ptr = data;
  return cudaSuccess;
}

cudaError_t cudaFreeAsync(void* ptr, cudaStream_t stream) {
  std::lock_guard<std::recursive_mutex> lock(state().mutex);
  if (!tls_emu::valid_stream(stream)) return set_error(cudaErrorInvalidResourceHandle);
  if (!ptr) return cudaSuccess;
  auto it = state().allocations.find(static_cast<const char*>(ptr));
  if (it == state().allocations.end()) return set_error(cudaErrorInvalidValue);
  munmap(it->second.map_base, it->second.map_bytes);
  state().live_bytes -= it->second.bytes;
  if (it->second.pooled) state().pools[it->second.device].used -= it->second.bytes;
  state().allocations.erase(it);
  return cudaSuccess;
}

cudaError_t cudaMemsetAsync(void* ptr, int value, size_t bytes, cudaStream_t stream) {
  if (!tls_emu::valid_stream(stream)) return set_error(cudaErrorInvalidResourceHandle);
  if (bytes == 0) return cudaSuccess;
  if (!tls_emu::is_device_range(ptr, bytes)) return set_error(cudaErrorInvalidValue);
  tls_emu::DeviceAccess access;
  std::memset(ptr, value, bytes);
  return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t stream) {
  if (!tls_emu::valid_stream(stream)) return set_error(cudaErrorInvalidResourceHandle);
  if (bytes == 0) return cudaSuccess;
  const bool dst_dev = tls_emu::is_device_range(dst, bytes),
             src_dev = tls_emu::is_device_range(src, bytes);
  bool ok = true;
  switch (kind) {
    case cudaMemcpyHostToHost:
      ok = !dst_dev && !src_dev && !tls_emu::is_device_pointer(dst) &&
           !tls_emu::is_device_pointer(src);
      break;
    case cudaMemcpyHostToDevice:
      ok = dst_dev && !tls_emu::is_device_pointer(src);
      break;
    case cudaMemcpyDeviceToHost:
      ok = src_dev && !tls_emu::is_device_pointer(dst);
      break;
    case cudaMemcpyDeviceToDevice:
      ok = dst_dev && src_dev;
      break;
    case cudaMemcpyDefault:
      ok = (dst_dev || !tls_emu::is_device_pointer(dst)) &&
           (src_dev || !tls_emu::is_device_pointer(src));
      break;
  }
  if (!ok) return set_error(cudaErrorInvalidValue);
  const char *d = static_cast<const char*>(dst), *s = static_cast<const char*>(src);
  if (d != s && d < s + bytes && s < d + bytes)
    tls_emu::device_fault(
        "a copy between overlapping ranges (undefined on a GPU: cudaMemcpy is "
        "not memmove)");
  tls_emu::DeviceAccess access;
  std::memcpy(dst, src, bytes);
  return cudaSuccess;
}

cudaError_t cudaMemcpy2DAsync(void* dst, size_t dpitch, const void* src, size_t spitch,
                              size_t width, size_t height, cudaMemcpyKind kind,
                              cudaStream_t stream) {
  if (width == 0 || height == 0) return cudaSuccess;
  if (dpitch < width || spitch < width) return set_error(cudaErrorInvalidPitchValue);
  // Each row is a copy of its own: the checks apply row by row, the gaps are not touched.
  for (size_t r = 0; r < height; ++r) {
    const cudaError_t e =
        cudaMemcpyAsync(static_cast<char*>(dst) + r * dpitch,
                        static_cast<const char*>(src) + r * spitch, width, kind, stream);
    if (e != cudaSuccess) return e;
  }
  return cudaSuccess;
}

cudaError_t cudaPointerGetAttributes(cudaPointerAttributes* attr, const void* ptr) {
  if (!attr) return set_error(cudaErrorInvalidValue);
  if (tls_emu::is_device_pointer(ptr)) {
    std::lock_guard<std::recursive_mutex> lock(state().mutex);
    *attr = {cudaMemoryTypeDevice, tls_emu::find(ptr)->device, const_cast<void*>(ptr), nullptr};
  } else {
    *attr = {cudaMemoryTypeUnregistered, -2, nullptr, const_cast<void*>(ptr)};
  }
  return cudaSuccess;
}

cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
  std::lock_guard<std::recursive_mutex> lock(state().mutex);
  *total_bytes = tls_emu::kTotalMemory;
  *free_bytes = tls_emu::kTotalMemory - state().live_bytes;
  return cudaSuccess;
}

cudaError_t cudaDeviceGetDefaultMemPool(cudaMemPool_t* pool, int device) {
  if (device < 0 || device >= tls_emu::device_count()) return set_error(cudaErrorInvalidDevice);
  *pool = &state().pools[device];
  return cudaSuccess;
}

namespace {
bool valid_pool(cudaMemPool_t pool) {
  return pool >= state().pools && pool < state().pools + tls_emu::kMaxDevices;
}
}  // namespace

cudaError_t cudaMemPoolSetAttribute(cudaMemPool_t pool, cudaMemPoolAttr attr, void* value) {
  std::lock_guard<std::recursive_mutex> lock(state().mutex);
  if (!valid_pool(pool) || !value) return set_error(cudaErrorInvalidValue);
  const uint64_t v = *static_cast<uint64_t*>(value);
  switch (attr) {
    case cudaMemPoolAttrReleaseThreshold:
      pool->release_threshold = v;
      return cudaSuccess;
    case cudaMemPoolAttrUsedMemHigh:
    case cudaMemPoolAttrReservedMemHigh:
      if (v != 0) return set_error(cudaErrorInvalidValue);  // high-water marks reset to 0 only
      pool->used_high = pool->used;
      return cudaSuccess;
    default:
      return set_error(cudaErrorInvalidValue);
  }
}

cudaError_t cudaMemPoolGetAttribute(cudaMemPool_t pool, cudaMemPoolAttr attr, void* value) {
  std::lock_guard<std::recursive_mutex> lock(state().mutex);
  if (!valid_pool(pool) || !value) return set_error(cudaErrorInvalidValue);
  auto* out = static_cast<uint64_t*>(value);
  switch (attr) {
    case cudaMemPoolAttrReleaseThreshold:
      *out = pool->release_threshold;
      return cudaSuccess;
    case cudaMemPoolAttrUsedMemCurrent:
    case cudaMemPoolAttrReservedMemCurrent:
      *out = pool->used;
      return cudaSuccess;
    case cudaMemPoolAttrUsedMemHigh:
    case cudaMemPoolAttrReservedMemHigh:
      *out = pool->used_high;
      return cudaSuccess;
  }
  return set_error(cudaErrorInvalidValue);
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device) {
  if (!prop || device < 0 || device >= tls_emu::device_count())
    return set_error(cudaErrorInvalidDevice);
  *prop = {};
  std::snprintf(prop->name, sizeof prop->name, "tls_dist CUDA emulator (host)");
  prop->totalGlobalMem = tls_emu::kTotalMemory;
  prop->major = 9;
  prop->minor = 0;
  prop->multiProcessorCount = 132;
  prop->sharedMemPerBlockOptin = tls_emu::kSharedOptin;
  return cudaSuccess;
}

cudaError_t cudaHostRegister(void* ptr, size_t bytes, unsigned flags) {
  if (ptr == nullptr || bytes == 0 || flags != cudaHostRegisterDefault ||
      tls_emu::is_device_pointer(ptr))
    return set_error(cudaErrorInvalidValue);
  std::lock_guard<std::recursive_mutex> lock(state().mutex);
  const char* start = static_cast<const char*>(ptr);
  for (const auto& [p, n] : state().registered_host) {
    const char* q = static_cast<const char*>(p);
    if (start < q + n && q < start + bytes) return set_error(cudaErrorInvalidValue);
  }
  state().registered_host[ptr] = bytes;
  return cudaSuccess;
}

cudaError_t cudaHostUnregister(void* ptr) {
  std::lock_guard<std::recursive_mutex> lock(state().mutex);
  if (state().registered_host.erase(ptr) == 0) return set_error(cudaErrorInvalidValue);
  return cudaSuccess;
}

size_t tls_emu::registered_host_bytes() {
  std::lock_guard<std::recursive_mutex> lock(state().mutex);
  size_t total = 0;
  for (const auto& entry : state().registered_host) total += entry.second;
  return total;
}

cudaError_t cudaMalloc(void** ptr, size_t bytes) {
  return cudaMallocAsync(ptr, bytes, tls_emu::kUnpooled);
}

cudaError_t cudaFree(void* ptr) { return cudaFreeAsync(ptr, nullptr); }

cudaError_t cudaMemset(void* ptr, int value, size_t bytes) {
  return cudaMemsetAsync(ptr, value, bytes, nullptr);
}
