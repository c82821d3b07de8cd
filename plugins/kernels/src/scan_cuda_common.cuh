// Device helpers and launch arguments shared by the CUDA kernels (scan_cuda.cu: the sequence-chunked scan;
// scan_rows_cuda.cu: the state-split row scan; conv1d_cuda.cu: the causal conv1d; norm_cuda.cu: the
// residual add + RMSNorm).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "common.hpp"
#include "cuda_common.hpp"

namespace partool {

constexpr float kLog2e = 1.4426950408889634f;

static __device__ __forceinline__ float to_float(float x) { return x; }
static __device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
static __device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ __half from_float<__half>(float x) {
  return __float2half_rn(x);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

// 2^x on the special-function unit (one MUFU.EX2; ~2 ulp, denormal results flush to 0).
static __device__ __forceinline__ float ex2(float x) {
#ifdef PARTOOL_CUDA_EMULATION
  return exp2f(x);
#else
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
#endif
}

// The block's dynamic shared memory as `type name[]` (the emulator hands out its per-block buffer).
#ifdef PARTOOL_CUDA_EMULATION
#define PARTOOL_DYNAMIC_SHARED(type, name) type* name = static_cast<type*>(::partool::emu::dynamic_shared())
#else
#define PARTOOL_DYNAMIC_SHARED(type, name) extern __shared__ type name[]
#endif

static __device__ __forceinline__ float softplus(float x) { return x <= 20.0f ? log1pf(__expf(x)) : x; }
static __device__ __forceinline__ float silu(float x) { return x / (1.0f + __expf(-x)); }
// silu with __fdividef (2 ulp, 2 instructions) instead of an IEEE division (~10 and a slow path); for
// x < -88, 1 + e^-x is inf and the quotient -0, as it should be. Not in the chunked kernel: at its
// 255-register limit the different code spills 3x more (ptxas, sm_90: 92 against 32 bytes at CB = 32).
static __device__ __forceinline__ float silu_fast(float x) { return __fdividef(x, 1.0f + __expf(-x)); }

// Walks the elements start, start + stride, ... of a tile of `cols` columns as (row, col), row-major,
// with one division up front instead of a division and a remainder per element.
struct TileWalk {
  int row, col;
  const int cols, row_step, col_step;
  __device__ TileWalk(int start, int stride, int cols_)
      : row(start / cols_), col(start % cols_), cols(cols_), row_step(stride / cols_), col_step(stride % cols_) {}
  __device__ void next() {
    row += row_step;
    col += col_step;
    if (col >= cols) {
      col -= cols;
      ++row;
    }
  }
};

struct DirArgs {
  const void* u;
  const void* delta;
  const float* A;
  const void* B;
  const void* C;
  const float* D;
  const void* z;
  const float* delta_bias;
  float* last_state;
  int softplus;
  int reverse;
  int64_t bc_batch_stride, bc_state_stride;  // B and C: element (b, g, n, t) at b * bc_batch_stride + (g * dstate + n) * bc_state_stride + t
};

struct ScanArgs {
  DirArgs dir[2];
  void* out;
  int64_t batch_stride, dim_stride;  // u, delta, z and out: element (b, c, t) at b * batch_stride + c * dim_stride + t
  int batch, dim, dstate, length, groups;
  int ndir;  // 1: dir[0] alone (its own reverse flag); 2: dir[1] reversed, then dir[0] forward, summed
  float out_scale;
  int tiles_per_group;
};

// Launches the state-split row kernel (scan_rows_cuda.cu) for `args` with `states` per lane (1, 2, 4, 8 or
// 16; 0: by heuristic); a PARTOOL_* status.
int launch_scan_rows(const ScanArgs& args, partool_dtype_t dtype, int states, const DeviceInfo& dev,
                     cudaStream_t stream, const char* where);

}  // namespace partool
