// A CPU emulator of the CUDA execution model, so that the CUDA kernels run and are tested on machines
// without a GPU (CI, and most development sessions here).
//
// The kernel sources (src/*.cu) compile unchanged as host C++ with PARTOOL_CUDA_EMULATION defined
// (emulation/*_emulated.cpp include them). Every CUDA thread of a block runs as a fiber on its own
// stack; a fiber runs until it reaches __syncthreads() or a warp shuffle, and between those points
// the fibers of a block run in a seeded random order. So:
//   - a missing __syncthreads() between a shared-memory write and another thread's read shows up as
//     a wrong result for most seeds (the reader often runs before the writer);
//   - a barrier that not every thread reaches, or a shuffle waiting on a lane that has returned, is
//     reported as a deadlock instead of hanging;
//   - dynamic shared memory is filled with NaN bytes at the start of every block and guarded past its
//     end: reads of unwritten shared memory poison the output, writes past the end fail the launch.
// What it does not model: timing, memory coalescing, bank conflicts, register limits, the float
// rounding of the special-function unit (ex2.approx becomes exp2f), and warp-synchronous code that
// communicates through shared memory without __syncwarp() (it would pass here and may fail on a GPU).
//
// Launches run synchronously, one block after another, on the calling thread; host pointers stand
// in for device pointers, and the runtime calls that the entry points make besides launches
// (cudaMemsetAsync) are defined in cuda_emulator.cpp, synchronous too. atomicAdd adds in the (seeded)
// order the threads run, so sums come out the same on every run, which they need not on a GPU. The
// emulated device (multiprocessor count, shared-memory opt-in limit) is set through
// partool_cudaemu_set_device so tests can steer the kernels' launch heuristics.
#pragma once

#include <cuda_runtime.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>

namespace partool {
namespace emu {

struct DeviceProps {
  int sms = 132;                    // an H100 SXM's multiprocessor count
  int smem_optin = 227 * 1024;      // its per-block dynamic shared-memory limit
};

const DeviceProps& device();

// Runs `thread_body` for every thread of every block of the grid, `dynamic_smem` bytes of shared
// memory a block; a CUDA error status (cudaErrorInvalidConfiguration / InvalidValue for a launch
// a GPU would refuse, cudaErrorLaunchFailure for a fault found while running).
cudaError_t launch(dim3 grid, dim3 block, size_t dynamic_smem, const std::function<void()>& thread_body);

// The message behind the last failed launch (deadlock, shared-memory overrun, bad configuration).
const char* last_error();

// Per-thread built-ins of the running fiber.
const uint3& thread_idx();
const uint3& block_idx();
const dim3& block_dim();
const dim3& grid_dim();
void* dynamic_shared();

void sync_threads();
// Exchanges `value` among the lanes of `mask` in the caller's warp: the value of lane `src_lane`
// (a lane index within the warp; out-of-range sources return the caller's own value).
float warp_exchange(unsigned mask, float value, int src_lane);
int lane_id();

}  // namespace emu
}  // namespace partool

// ---- The CUDA built-ins the kernels use, as host functions -------------------------------------
#ifndef __launch_bounds__
#define __launch_bounds__(...)
#endif
#define threadIdx (::partool::emu::thread_idx())
#define blockIdx (::partool::emu::block_idx())
#define blockDim (::partool::emu::block_dim())
#define gridDim (::partool::emu::grid_dim())

inline void __syncthreads() { ::partool::emu::sync_threads(); }

inline float __shfl_sync(unsigned mask, float v, int src, int width = 32) {
  const int lane = ::partool::emu::lane_id();
  return ::partool::emu::warp_exchange(mask, v, (lane / width) * width + ((src % width + width) % width));
}
inline float __shfl_up_sync(unsigned mask, float v, unsigned delta, int width = 32) {
  const int lane = ::partool::emu::lane_id();
  const int src = lane % width >= static_cast<int>(delta) ? lane - static_cast<int>(delta) : lane;
  return ::partool::emu::warp_exchange(mask, v, src);
}
inline float __shfl_down_sync(unsigned mask, float v, unsigned delta, int width = 32) {
  const int lane = ::partool::emu::lane_id();
  const int src = lane % width + static_cast<int>(delta) < width ? lane + static_cast<int>(delta) : lane;
  return ::partool::emu::warp_exchange(mask, v, src);
}
inline float __shfl_xor_sync(unsigned mask, float v, int lane_mask, int width = 32) {
  const int lane = ::partool::emu::lane_id();
  const int src = lane ^ lane_mask;
  return ::partool::emu::warp_exchange(mask, v, src / width == lane / width ? src : lane);
}

// Atomic as it stands: the fibers of a block interleave only at barriers and shuffles, and blocks run one
// after another on the calling thread, so no other CUDA thread can run between the read and the write.
inline float atomicAdd(float* address, float value) {
  const float old = *address;
  *address = old + value;
  return old;
}

inline float __expf(float x) { return std::exp(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline int64_t min(int64_t a, int64_t b) { return a < b ? a : b; }
inline int64_t max(int64_t a, int64_t b) { return a > b ? a : b; }
