// CUDA depthwise conv1d (+ SiLU) along the sequence, causal or anti-causal (see partool_kernels.h).
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

template <typename T>
__global__ void __launch_bounds__(kConvThreads) conv1d_kernel(const T* __restrict__ x, const float* __restrict__ weight,
                                                              const float* __restrict__ bias, T* __restrict__ out,
                                                              int rows, int dim, int length, int width, int silu_on,
                                                              int reverse, int64_t batch_stride, int64_t dim_stride) {
  const int lane = threadIdx.x % 32;
  for (int row = blockIdx.x * kConvWarps + threadIdx.x / 32; row < rows; row += gridDim.x * kConvWarps) {
    const int c = row % dim;
    // w_m multiplies the element m steps back in the logical order: weight[c][width - 1 - m]
    float w[PARTOOL_MAX_CONV_WIDTH];
#pragma unroll
    for (int m = 0; m < PARTOOL_MAX_CONV_WIDTH; ++m) {
      w[m] = m < width ? weight[static_cast<int64_t>(c) * width + width - 1 - m] : 0.0f;  // unused past width
    }
    const float b0 = bias != nullptr ? bias[c] : 0.0f;
    const int64_t offset = row / dim * batch_stride + c * dim_stride;
    const T* xr = x + offset;
    T* outr = out + offset;
    float prev = 0.0f;  // this lane's element of the previous chunk (0 before the row: zero padding)
    for (int j0 = 0; j0 < length; j0 += 32) {
      const int j = j0 + lane;
      const int p = reverse ? length - 1 - j : j;
      const float cur = j < length ? to_float(xr[p]) : 0.0f;
      float acc = fmaf(w[0], cur, b0);
#pragma unroll
      for (int m = 1; m < PARTOOL_MAX_CONV_WIDTH; ++m) {
        if (m >= width) break;  // the same for the whole warp: its shuffles stay converged
        const float up = __shfl_up_sync(0xffffffffu, cur, m);            // lanes >= m: j - m in this chunk
        const float back = __shfl_sync(0xffffffffu, prev, (lane + 32 - m) % 32);  // lanes < m: the previous chunk
        acc = fmaf(w[m], lane >= m ? up : back, acc);
      }
      if (silu_on) acc = silu_fast(acc);
      if (j < length) outr[p] = from_float<T>(acc);
      prev = cur;
    }
  }
}

// p's strides filled in (with_strides).
template <typename T>
cudaError_t launch_conv(const partool_conv1d_params_t& p, cudaStream_t stream) {
  const int64_t rows = static_cast<int64_t>(p.batch) * p.dim;  // < 2^31, checked by the caller
  const int64_t want = (rows + kConvWarps - 1) / kConvWarps;
  const unsigned blocks = static_cast<unsigned>(want < 65535 * 16 ? want : 65535 * 16);
  return launch_kernel(conv1d_kernel<T>, blocks, kConvThreads, 0, stream, static_cast<const T*>(p.x), p.weight, p.bias,
                       static_cast<T*>(p.out), static_cast<int>(rows), p.dim, p.length, p.width, p.silu, p.reverse,
                       p.batch_stride, p.dim_stride);
}

}  // namespace
}  // namespace partool

extern "C" int partool_causal_conv1d_fwd_cuda(const partool_conv1d_params_t* p, void* cuda_stream) {
  static const char* where = "partool_causal_conv1d_fwd_cuda";
  if (int s = partool::validate_conv(p, where)) return s;
  partool::DeviceInfo dev;
  if (int s = partool::device_info(&dev, where)) return s;
  const struct {
    const void* ptr;
    const char* name;
  } ptrs[] = {{p->x, "x"}, {p->weight, "weight"}, {p->bias, "bias"}, {p->out, "out"}};
  for (const auto& x : ptrs) {
    if (int s = partool::check_device_ptr(x.ptr, x.name, where)) return s;
  }
  if (static_cast<int64_t>(p->batch) * p->dim > 0x7fffffff) {
    return partool::fail(PARTOOL_ERR_UNSUPPORTED_SHAPE, "%s: batch * dim = %lld rows, more than the kernel indexes",
                         where, static_cast<long long>(p->batch) * p->dim);
  }
  auto stream = static_cast<cudaStream_t>(cuda_stream);
  const partool_conv1d_params_t q = partool::with_strides(*p);
  cudaError_t err;
  switch (p->io_dtype) {
    case PARTOOL_DTYPE_F16:
      err = partool::launch_conv<__half>(q, stream);
      break;
    case PARTOOL_DTYPE_BF16:
      err = partool::launch_conv<__nv_bfloat16>(q, stream);
      break;
    default:
      err = partool::launch_conv<float>(q, stream);
  }
  if (err != cudaSuccess) return partool::fail(PARTOOL_ERR_CUDA, "%s: kernel launch failed: %s", where, partool::error_string(err));
  partool::clear_error();
  return PARTOOL_OK;
}
