// Kernels with hand-computable answers, and kernels with the bugs the emulator must catch: the tests
// of the emulator itself (tests/test_cuda_emulation.py), built into the emulation library only.
#include <cstring>

#include "scan_cuda_common.cuh"

namespace partool {
namespace {

// out[block] = 1 + 2 + ... + blockDim.x, summed by thread 0 from shared memory.
__global__ void block_sum(float* out, int with_barrier) {
  PARTOOL_DYNAMIC_SHARED(float, s);
  s[threadIdx.x] = threadIdx.x + 1.0f;
  if (with_barrier) __syncthreads();
  if (threadIdx.x == 0) {
    float acc = 0.0f;
    for (unsigned i = 0; i < blockDim.x; ++i) acc += s[i];
    out[blockIdx.x] = acc;
  }
}

// out[t] = sum of the lane indices of t's width-wide segment (butterfly reduction).
__global__ void segment_sums(float* out, int width) {
  float v = static_cast<float>(threadIdx.x % 32);
  for (int off = width / 2; off > 0; off /= 2) v += __shfl_xor_sync(0xffffffffu, v, off, width);
  out[blockIdx.x * blockDim.x + threadIdx.x] = v;
}

// out[t] = 1 + 2 + ... + (lane index within the segment + 1) (inclusive scan with shuffles up).
__global__ void segment_prefix(float* out, int width) {
  const int r = static_cast<int>(threadIdx.x % 32) % width;
  float v = r + 1.0f;
  for (int off = 1; off < width; off *= 2) {
    const float p = __shfl_up_sync(0xffffffffu, v, off, width);
    if (r >= off) v += p;
  }
  out[blockIdx.x * blockDim.x + threadIdx.x] = v;
}

// out[t] = lane (width - 1) of t's segment, broadcast.
__global__ void segment_broadcast(float* out, int width) {
  const float v = static_cast<float>(threadIdx.x);
  out[blockIdx.x * blockDim.x + threadIdx.x] = __shfl_sync(0xffffffffu, v, width - 1, width);
}

// Bug: half the block skips the barrier.
__global__ void divergent_barrier(float* out, int) {
  if (threadIdx.x < blockDim.x / 2) __syncthreads();
  out[threadIdx.x] = 1.0f;
}

// Bug: writes one float past the end of the dynamic shared memory (`floats` long).
__global__ void shared_overrun(float* out, int floats) {
  PARTOOL_DYNAMIC_SHARED(float, s);
  if (threadIdx.x == 0) s[floats] = 1.0f;
  out[threadIdx.x] = 0.0f;
}

// Bug: lane 5 returns while its warp shuffles with a full mask.
__global__ void shuffle_after_return(float* out, int) {
  if (threadIdx.x % 32 == 5) return;
  out[threadIdx.x] = __shfl_sync(0xffffffffu, 1.0f, 0);
}

}  // namespace
}  // namespace partool

extern "C" PARTOOL_API int partool_cudaemu_selftest(const char* kernel, float* out, int blocks, int threads,
                                                    int smem_bytes, int arg) {
  using Kernel = void (*)(float*, int);
  const struct {
    const char* name;
    Kernel fn;
  } kernels[] = {{"block_sum", partool::block_sum},
                 {"segment_sums", partool::segment_sums},
                 {"segment_prefix", partool::segment_prefix},
                 {"segment_broadcast", partool::segment_broadcast},
                 {"divergent_barrier", partool::divergent_barrier},
                 {"shared_overrun", partool::shared_overrun},
                 {"shuffle_after_return", partool::shuffle_after_return}};
  for (const auto& k : kernels) {
    if (std::strcmp(k.name, kernel) != 0) continue;
    const cudaError_t err = partool::launch_kernel(k.fn, static_cast<unsigned>(blocks), static_cast<unsigned>(threads),
                                                   static_cast<size_t>(smem_bytes), nullptr, out, arg);
    if (err != cudaSuccess) return partool::fail(PARTOOL_ERR_CUDA, "%s: %s", kernel, partool::error_string(err));
    partool::clear_error();
    return PARTOOL_OK;
  }
  return partool::fail(PARTOOL_ERR_INVALID_ARGUMENT, "no self-test kernel named %s", kernel);
}
