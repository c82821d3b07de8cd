// CUDA depthwise conv1d (+ SiLU) along the sequence, causal or anti-causal (see partool_kernels.h), one
// call or a pair of calls (Vim's two directions) per launch.
//
// A warp walks one row in chunks of 32 positions, one per lane: each element is read from global memory
// once (coalesced) and its width - 1 neighbours come from the other lanes by shuffles (from the previous
// chunk for the first lanes), the row's weights and bias sit in registers. The anti-causal direction is
// the causal one in a logical order that runs from the row's end (logical j is position length - 1 - j),
// so both share one code path and nothing is flipped.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "common.hpp"
#include "cuda_common.hpp"
#include "scan_cuda_common.cuh"

namespace partool {
namespace {

constexpr int kConvThreads = 256;
constexpr int kConvWarps = kConvThreads / 32;

// One conv1d call's own arguments (the calls of a launch share dim, length, width and dtype).
struct ConvCall {
  const void* x;
  const float* weight;
  const float* bias;
  void* out;
  int64_t batch_stride, dim_stride;
  int silu, reverse;
};

ConvCall conv_call(const partool_conv1d_params_t& p) {  // p's strides filled in (with_strides)
  return ConvCall{p.x, p.weight, p.bias, p.out, p.batch_stride, p.dim_stride, p.silu, p.reverse};
}

// Rows first_row, first_row + row_step, ... of one call, a warp each.
template <typename T>
__device__ __forceinline__ void conv_rows(const ConvCall& call, int first_row, int row_step, int rows, int dim,
                                          int length, int width) {
  const int lane = threadIdx.x % 32;
  for (int row = first_row; row < rows; row += row_step) {
    const int c = row % dim;
    // w_m multiplies the element m steps back in the logical order: weight[c][width - 1 - m]
    float w[PARTOOL_MAX_CONV_WIDTH];
#pragma unroll
    for (int m = 0; m < PARTOOL_MAX_CONV_WIDTH; ++m) {
      w[m] = m < width ? call.weight[static_cast<int64_t>(c) * width + width - 1 - m] : 0.0f;  // unused past width
    }
    const float b0 = call.bias != nullptr ? call.bias[c] : 0.0f;
    const int64_t offset = row / dim * call.batch_stride + c * call.dim_stride;
    const T* __restrict__ xr = static_cast<const T*>(call.x) + offset;
    T* __restrict__ outr = static_cast<T*>(call.out) + offset;
    float prev = 0.0f;  // this lane's element of the previous chunk (0 before the row: zero padding)
    for (int j0 = 0; j0 < length; j0 += 32) {
      const int j = j0 + lane;
      const int p = call.reverse ? length - 1 - j : j;
      const float cur = j < length ? to_float(xr[p]) : 0.0f;
      float acc = fmaf(w[0], cur, b0);
#pragma unroll
      for (int m = 1; m < PARTOOL_MAX_CONV_WIDTH; ++m) {
        if (m >= width) break;  // the same for the whole warp: its shuffles stay converged
        const float up = __shfl_up_sync(0xffffffffu, cur, m);            // lanes >= m: j - m in this chunk
        const float back = __shfl_sync(0xffffffffu, prev, (lane + 32 - m) % 32);  // lanes < m: the previous chunk
        acc = fmaf(w[m], lane >= m ? up : back, acc);
      }
      if (call.silu) acc = silu_fast(acc);
      if (j < length) outr[p] = from_float<T>(acc);
      prev = cur;
    }
  }
}

// The grid is ncalls equal parts, one per call; each block takes rows of its call, a warp a row. The
// calls get separate copies of the row loop (no per-element choice between their arguments).
template <typename T>
__global__ void __launch_bounds__(kConvThreads) conv1d_kernel(ConvCall first, ConvCall second, int rows, int ncalls,
                                                              int dim, int length, int width) {
  const int blocks_per_call = gridDim.x / ncalls;
  const bool in_second = blockIdx.x >= blocks_per_call;
  const int block = in_second ? blockIdx.x - blocks_per_call : blockIdx.x;
  const int first_row = block * kConvWarps + threadIdx.x / 32, row_step = blocks_per_call * kConvWarps;
  if (in_second) {
    conv_rows<T>(second, first_row, row_step, rows, dim, length, width);
  } else {
    conv_rows<T>(first, first_row, row_step, rows, dim, length, width);
  }
}

template <typename T>
cudaError_t launch_conv(const partool_conv1d_params_t* calls, int ncalls, cudaStream_t stream) {
  const partool_conv1d_params_t& p = calls[0];
  const int64_t rows = static_cast<int64_t>(p.batch) * p.dim;  // ncalls * rows < 2^31, checked by the caller
  const int64_t want = (rows + kConvWarps - 1) / kConvWarps;    // blocks per call
  const unsigned blocks = static_cast<unsigned>(ncalls * (want < 65535 * 8 ? want : 65535 * 8));
  return launch_kernel(conv1d_kernel<T>, blocks, kConvThreads, 0, stream, conv_call(calls[0]),
                       conv_call(calls[ncalls - 1]), static_cast<int>(rows), ncalls, p.dim, p.length, p.width);
}

// Launches 1 or 2 validated calls of one shape; a PARTOOL_* status.
int run_conv(const partool_conv1d_params_t* given, int ncalls, void* cuda_stream, const char* where) {
  DeviceInfo dev;
  if (int s = device_info(&dev, where)) return s;
  partool_conv1d_params_t calls[2];
  for (int i = 0; i < ncalls; ++i) {
    const partool_conv1d_params_t& p = given[i];
    const struct {
      const void* ptr;
      const char* name;
    } ptrs[] = {{p.x, "x"}, {p.weight, "weight"}, {p.bias, "bias"}, {p.out, "out"}};
    for (const auto& x : ptrs) {
      if (int s = check_device_ptr(x.ptr, x.name, where)) return s;
    }
    calls[i] = with_strides(p);
  }
  const int64_t rows = static_cast<int64_t>(calls[0].batch) * calls[0].dim * ncalls;
  if (rows > 0x7fffffff) {
    return fail(PARTOOL_ERR_UNSUPPORTED_SHAPE, "%s: %lld rows, more than the kernel indexes", where,
                static_cast<long long>(rows));
  }
  auto stream = static_cast<cudaStream_t>(cuda_stream);
  cudaError_t err;
  switch (calls[0].io_dtype) {
    case PARTOOL_DTYPE_F16:
      err = launch_conv<__half>(calls, ncalls, stream);
      break;
    case PARTOOL_DTYPE_BF16:
      err = launch_conv<__nv_bfloat16>(calls, ncalls, stream);
      break;
    default:
      err = launch_conv<float>(calls, ncalls, stream);
  }
  if (err != cudaSuccess) return fail(PARTOOL_ERR_CUDA, "%s: kernel launch failed: %s", where, error_string(err));
  clear_error();
  return PARTOOL_OK;
}

}  // namespace
}  // namespace partool

extern "C" int partool_causal_conv1d_fwd_cuda(const partool_conv1d_params_t* p, void* cuda_stream) {
  static const char* where = "partool_causal_conv1d_fwd_cuda";
  if (int s = partool::validate_conv(p, where)) return s;
  return partool::run_conv(p, 1, cuda_stream, where);
}

extern "C" int partool_causal_conv1d_pair_fwd_cuda(const partool_conv1d_pair_params_t* p, void* cuda_stream) {
  static const char* where = "partool_causal_conv1d_pair_fwd_cuda";
  if (int s = partool::validate_conv_pair(p, where)) return s;
  const partool_conv1d_params_t calls[2] = {p->first, p->second};
  return partool::run_conv(calls, 2, cuda_stream, where);
}
