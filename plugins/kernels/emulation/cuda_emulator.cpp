// The CUDA emulator's scheduler (see cuda_emulator.hpp): blocks run one after another, the threads of
// a block as ucontext fibers that yield at every barrier and shuffle.
#include "cuda_emulator.hpp"

#include <ucontext.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "partool_kernels.h"

namespace partool {
namespace emu {
namespace {

constexpr size_t kStackBytes = 256 * 1024;  // the kernels keep ~1 KiB of locals a thread
constexpr size_t kGuardBytes = 256;         // checked after every block for writes past the end
constexpr unsigned char kPoison = 0xff;     // 0xffffffff is a float NaN
constexpr int kWarpSize = 32;

enum class State { kReady, kAtSyncthreads, kAtShuffle, kReturned };

struct Fiber {
  ucontext_t context;
  uint3 tid;
  int warp = 0, lane = 0;
  State state = State::kReady;
};

struct Warp {
  unsigned waiting = 0;  // lanes at the current shuffle barrier
  unsigned mask = 0;     // the mask they gave
  float values[kWarpSize];
};

// A fiber fault: unwinds the faulting fiber to its entry, which records it and stops the block.
struct Fault {
  std::string message;
};

struct Block {
  dim3 grid, block;
  uint3 idx;
  std::vector<Fiber> fibers;
  std::vector<Warp> warps;
  int at_syncthreads = 0, returned = 0;
  std::string fault;
  ucontext_t scheduler;
  unsigned char* smem = nullptr;
  size_t smem_bytes = 0;
  const std::function<void()>* body = nullptr;
};

DeviceProps g_device;
uint64_t g_seed = 0x5eed;
std::string g_last_error;
struct {
  unsigned grid = 0, block = 0;
  size_t smem = 0;
  uint64_t count = 0;
} g_launches;

thread_local Block* t_block = nullptr;
thread_local Fiber* t_fiber = nullptr;

std::string describe(const Fiber& f) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "thread (%u,%u,%u)", f.tid.x, f.tid.y, f.tid.z);
  return buf;
}

[[noreturn]] void raise_fault(const std::string& what) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "block (%u,%u,%u) ", t_block->idx.x, t_block->idx.y, t_block->idx.z);
  throw Fault{buf + describe(*t_fiber) + ": " + what};
}

void yield_to_scheduler() { swapcontext(&t_fiber->context, &t_block->scheduler); }

void fiber_entry() {
  Block& b = *t_block;
  try {
    (*b.body)();
    Fiber& f = *t_fiber;
    if (b.at_syncthreads > 0) raise_fault("returned while other threads wait at __syncthreads()");
    const Warp& w = b.warps[f.warp];
    if (w.waiting != 0 && (w.mask >> f.lane & 1u)) raise_fault("returned while its warp waits for it at a shuffle");
  } catch (const Fault& fault) {
    if (b.fault.empty()) b.fault = fault.message;
  }
  t_fiber->state = State::kReturned;
  ++b.returned;
  // returning resumes uc_link: the scheduler
}

std::vector<std::unique_ptr<char[]>>& stacks() {
  static thread_local std::vector<std::unique_ptr<char[]>> pool;  // untouched pages cost no memory
  return pool;
}

std::string deadlock_report(const Block& b) {
  int at_sync = 0, at_shuffle = 0;
  const Fiber* first_shuffle = nullptr;
  for (const Fiber& f : b.fibers) {
    if (f.state == State::kAtSyncthreads) ++at_sync;
    if (f.state == State::kAtShuffle) {
      ++at_shuffle;
      if (first_shuffle == nullptr) first_shuffle = &f;
    }
  }
  char buf[256];
  std::snprintf(buf, sizeof buf,
                "block (%u,%u,%u) deadlocks: %d threads wait at __syncthreads(), %d at a warp shuffle, %d returned%s%s",
                b.idx.x, b.idx.y, b.idx.z, at_sync, at_shuffle, b.returned,
                first_shuffle ? "; first waiting at a shuffle: " : "",
                first_shuffle ? describe(*first_shuffle).c_str() : "");
  return buf;
}

void run_block(Block& b, std::mt19937_64& rng) {
  const int n = static_cast<int>(b.block.x * b.block.y * b.block.z);
  auto& pool = stacks();
  while (static_cast<int>(pool.size()) < n) pool.emplace_back(new char[kStackBytes]);
  b.fibers.assign(n, Fiber{});
  b.warps.assign((n + kWarpSize - 1) / kWarpSize, Warp{});
  b.at_syncthreads = b.returned = 0;
  b.fault.clear();
  std::memset(b.smem, kPoison, b.smem_bytes + kGuardBytes);
  for (int i = 0; i < n; ++i) {
    Fiber& f = b.fibers[i];
    f.tid = uint3{static_cast<unsigned>(i) % b.block.x, static_cast<unsigned>(i) / b.block.x % b.block.y,
                  static_cast<unsigned>(i) / (b.block.x * b.block.y)};
    f.warp = i / kWarpSize;
    f.lane = i % kWarpSize;
    getcontext(&f.context);
    f.context.uc_stack.ss_sp = pool[i].get();
    f.context.uc_stack.ss_size = kStackBytes;
    f.context.uc_link = &b.scheduler;
    makecontext(&f.context, fiber_entry, 0);
  }
  std::vector<int> order;
  while (b.fault.empty()) {
    order.clear();
    for (int i = 0; i < n; ++i) {
      if (b.fibers[i].state == State::kReady) order.push_back(i);
    }
    if (order.empty()) {
      if (b.returned < n) b.fault = deadlock_report(b);
      break;
    }
    std::shuffle(order.begin(), order.end(), rng);
    for (int i : order) {
      if (!b.fault.empty()) break;
      if (b.fibers[i].state != State::kReady) continue;
      t_fiber = &b.fibers[i];
      swapcontext(&b.scheduler, &t_fiber->context);
    }
  }
  t_fiber = nullptr;
  if (b.fault.empty()) {
    for (size_t i = 0; i < kGuardBytes; ++i) {
      if (b.smem[b.smem_bytes + i] != kPoison) {
        char buf[160];
        std::snprintf(buf, sizeof buf, "block (%u,%u,%u) wrote past the end of its %zu bytes of dynamic shared memory",
                      b.idx.x, b.idx.y, b.idx.z, b.smem_bytes);
        b.fault = buf;
        break;
      }
    }
  }
}

cudaError_t fail(cudaError_t status, const std::string& message) {
  g_last_error = message;
  return status;
}

}  // namespace

const DeviceProps& device() { return g_device; }

const char* last_error() { return g_last_error.c_str(); }

cudaError_t launch(dim3 grid, dim3 block, size_t dynamic_smem, const std::function<void()>& thread_body) {
  const uint64_t threads = static_cast<uint64_t>(block.x) * block.y * block.z;
  if (threads == 0 || threads > 1024 || grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.y > 65535 ||
      grid.z > 65535) {
    return fail(cudaErrorInvalidConfiguration, "invalid launch configuration (grid or block size)");
  }
  if (dynamic_smem > static_cast<size_t>(g_device.smem_optin)) {
    return fail(cudaErrorInvalidValue, "dynamic shared memory " + std::to_string(dynamic_smem) +
                                           " bytes exceeds the device's per-block limit of " +
                                           std::to_string(g_device.smem_optin));
  }
  if (t_block != nullptr) return fail(cudaErrorNotSupported, "a kernel launched from inside a kernel");
  g_launches = {grid.x * grid.y * grid.z, static_cast<unsigned>(threads), dynamic_smem, g_launches.count + 1};
  std::vector<unsigned char> smem(dynamic_smem + kGuardBytes);
  Block b;
  b.grid = grid;
  b.block = block;
  b.smem = smem.data();
  b.smem_bytes = dynamic_smem;
  b.body = &thread_body;
  std::mt19937_64 rng(g_seed);
  t_block = &b;
  for (unsigned z = 0; z < grid.z; ++z) {
    for (unsigned y = 0; y < grid.y; ++y) {
      for (unsigned x = 0; x < grid.x; ++x) {
        b.idx = uint3{x, y, z};
        run_block(b, rng);
        if (!b.fault.empty()) {
          t_block = nullptr;
          return fail(cudaErrorLaunchFailure, b.fault);
        }
      }
    }
  }
  t_block = nullptr;
  return cudaSuccess;
}

const uint3& thread_idx() { return t_fiber->tid; }
const uint3& block_idx() { return t_block->idx; }
const dim3& block_dim() { return t_block->block; }
const dim3& grid_dim() { return t_block->grid; }
void* dynamic_shared() { return t_block->smem; }
int lane_id() { return t_fiber->lane; }

void sync_threads() {
  Block& b = *t_block;
  Fiber& f = *t_fiber;
  if (b.returned > 0) raise_fault("reached __syncthreads() after another thread of the block returned");
  f.state = State::kAtSyncthreads;
  if (++b.at_syncthreads == static_cast<int>(b.fibers.size())) {
    for (Fiber& other : b.fibers) other.state = State::kReady;
    b.at_syncthreads = 0;
  }
  yield_to_scheduler();
}

namespace {

void warp_barrier(unsigned mask) {
  Block& b = *t_block;
  Fiber& f = *t_fiber;
  Warp& w = b.warps[f.warp];
  if (w.waiting != 0 && w.mask != mask) raise_fault("shuffles with a different lane mask than its warp");
  for (int lane = 0; lane < kWarpSize; ++lane) {
    const int i = f.warp * kWarpSize + lane;
    if ((mask >> lane & 1u) && (i >= static_cast<int>(b.fibers.size()) || b.fibers[i].state == State::kReturned)) {
      raise_fault("shuffles with lane " + std::to_string(lane) + " in its mask, which has returned or does not exist");
    }
  }
  w.mask = mask;
  w.waiting |= 1u << f.lane;
  f.state = State::kAtShuffle;
  if (w.waiting == mask) {
    for (int lane = 0; lane < kWarpSize; ++lane) {
      if (mask >> lane & 1u) b.fibers[f.warp * kWarpSize + lane].state = State::kReady;
    }
    w.waiting = 0;
  }
  yield_to_scheduler();
}

}  // namespace

float warp_exchange(unsigned mask, float value, int src_lane) {
  Fiber& f = *t_fiber;
  if (!(mask >> f.lane & 1u)) raise_fault("shuffles with a mask that leaves out its own lane");
  Warp& w = t_block->warps[f.warp];
  w.values[f.lane] = value;
  warp_barrier(mask);  // every lane of the mask has deposited its value
  if (src_lane < 0 || src_lane >= kWarpSize || !(mask >> src_lane & 1u)) {
    raise_fault("reads lane " + std::to_string(src_lane) + ", which is not in the shuffle's mask");
  }
  const float result = w.values[src_lane];
  warp_barrier(mask);  // every lane has read before any deposits again
  return result;
}

}  // namespace emu
}  // namespace partool

// ---- The CUDA runtime on host memory ------------------------------------------------------------
// Declared by the real cuda_runtime_api.h; defined here (hidden, like the rest of the library) so that
// the entry points call them unchanged. Synchronous, as the launches are, so stream order holds.
extern "C" cudaError_t cudaMemsetAsync(void* ptr, int value, size_t count, cudaStream_t) {
  std::memset(ptr, value, count);
  return cudaSuccess;
}

// ---- Test hooks --------------------------------------------------------------------------------
extern "C" {

// Sets the emulated device that the launch heuristics see; a PARTOOL_* status.
PARTOOL_API int partool_cudaemu_set_device(int multiprocessors, int smem_optin_bytes) {
  if (multiprocessors < 1 || smem_optin_bytes < 1024) return PARTOOL_ERR_INVALID_ARGUMENT;
  partool::emu::g_device = {multiprocessors, smem_optin_bytes};
  return PARTOOL_OK;
}

// Seeds the order in which the threads of a block run between barriers.
PARTOOL_API void partool_cudaemu_set_seed(unsigned long long seed) { partool::emu::g_seed = seed; }

// The grid (blocks), block (threads) and dynamic shared memory of the last launch, and how many
// launches there have been.
PARTOOL_API unsigned long long partool_cudaemu_last_launch(unsigned* blocks, unsigned* threads, size_t* smem) {
  const auto& l = partool::emu::g_launches;
  if (blocks) *blocks = l.grid;
  if (threads) *threads = l.block;
  if (smem) *smem = l.smem;
  return l.count;
}

}  // extern "C"
