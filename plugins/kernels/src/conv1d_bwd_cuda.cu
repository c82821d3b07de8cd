// CUDA backward of the depthwise conv1d + SiLU (partool_causal_conv1d_bwd_cuda; the math is in
// partool_kernels.h), causal or anti-causal.
//
// In the logical order of the forward (conv1d_cuda.cu: logical j is position j, or length - 1 - j
// anti-causally) the forward is pre[j] = bias + sum_m w_m x[j - m] with w_m = weight[c][width - 1 - m], so
//   dpre[j] = dout[j] * silu'(pre[j])   (dout[j] without SiLU; pre recomputed from x)
//   dx[j]   = sum_m w_m dpre[j + m]      dw_m += dpre[j] x[j - m]      dbias += dpre[j]
//
// A warp walks one row in chunks of 32 logical positions, a lane each, like the forward: x[j - m] comes from
// lanes below and the previous chunk by shuffles. dx[j] needs dpre of the next m positions, which for the
// chunk's last lanes lie in the next chunk, so dx of a chunk is written one iteration later, from that
// chunk's dpre and the next one's (shuffled down and across); each element of x and dout is read once.
// dweight and dbias: each lane sums its positions, the warp adds its lanes (butterfly), and the block adds
// its warps that hold the same channel (rows go channel-major, (c, b), so a block's 8 rows are mostly one
// channel) before one atomicAdd per channel and tap.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "common.hpp"
#include "cuda_common.hpp"
#include "scan_cuda_common.cuh"

namespace partool {
namespace {

constexpr int kConvBwdThreads = 256;
constexpr int kConvBwdWarps = kConvBwdThreads / 32;
constexpr int kSums = PARTOOL_MAX_CONV_WIDTH + 1;  // a row's sums: dw_0 .. dw_3, then dbias
// [kConvBwdWarps][kSums] floats, then [kConvBwdWarps] ints: each warp's channel (-1: no row)
constexpr size_t kConvBwdSharedBytes = kConvBwdWarps * (kSums * sizeof(float) + sizeof(int));

struct ConvBwdArgs {
  const void* x;
  const float* weight;
  const float* bias;
  const void* dout;
  float* dx;
  float* dweight;
  float* dbias;
  int64_t batch_stride, dim_stride;  // x and dout: (b, c, t) at b * batch_stride + c * dim_stride + t
  int batch, dim, length, width;
  int silu, reverse;
};

// Walks row (b, c): writes its dx and adds its sums (dw_m to sums[m], dbias to sums[kSums - 1]), in every
// lane of the warp.
template <typename T>
__device__ void conv_bwd_row(const ConvBwdArgs& a, int b, int c, float (&sums)[kSums]) {
  const int lane = threadIdx.x % 32, L = a.length, width = a.width;
  float w[PARTOOL_MAX_CONV_WIDTH];
#pragma unroll
  for (int m = 0; m < PARTOOL_MAX_CONV_WIDTH; ++m) {
    w[m] = m < width ? a.weight[static_cast<int64_t>(c) * width + width - 1 - m] : 0.0f;
  }
  const float b0 = a.bias != nullptr ? a.bias[c] : 0.0f;
  const int64_t offset = b * a.batch_stride + c * a.dim_stride;
  const T* __restrict__ xr = static_cast<const T*>(a.x) + offset;
  const T* __restrict__ doutr = static_cast<const T*>(a.dout) + offset;
  float* __restrict__ dxr = a.dx + (static_cast<int64_t>(b) * a.dim + c) * L;
  float x_prev = 0.0f, dp_prev = 0.0f;  // this lane's x and dpre of the previous chunk (0 before the row)
  // One chunk past the row: its iteration writes the last chunk's dx (with dpre = 0 beyond the end).
  for (int j0 = 0; j0 < L + 32; j0 += 32) {
    const int j = j0 + lane;
    const bool in_row = j < L;
    const int p = a.reverse ? L - 1 - j : j;
    const float cur = in_row ? to_float(xr[p]) : 0.0f;
    float xm[PARTOOL_MAX_CONV_WIDTH] = {cur};  // x[j - m]
    float pre = fmaf(w[0], cur, b0);
#pragma unroll
    for (int m = 1; m < PARTOOL_MAX_CONV_WIDTH; ++m) {
      if (m >= width) break;  // the same for the whole warp: its shuffles stay converged
      const float up = __shfl_up_sync(0xffffffffu, cur, m);                       // lanes >= m: this chunk
      const float back = __shfl_sync(0xffffffffu, x_prev, (lane + 32 - m) % 32);  // lanes < m: the previous one
      xm[m] = lane >= m ? up : back;
      pre = fmaf(w[m], xm[m], pre);
    }
    float dp = 0.0f;
    if (in_row) {
      dp = to_float(doutr[p]);
      if (a.silu) {
        const float s = 1.0f / (1.0f + __expf(-pre));
        dp *= s * fmaf(pre, 1.0f - s, 1.0f);  // silu'(pre)
      }
    }
#pragma unroll
    for (int m = 0; m < PARTOOL_MAX_CONV_WIDTH; ++m) sums[m] = fmaf(dp, xm[m], sums[m]);  // xm = 0 past width
    sums[kSums - 1] += dp;
    if (j0 > 0) {  // dx of the previous chunk: dpre[j - 32 + m] from that chunk (lane + m < 32) or this one
      float acc = w[0] * dp_prev;
#pragma unroll
      for (int m = 1; m < PARTOOL_MAX_CONV_WIDTH; ++m) {
        if (m >= width) break;
        const float down = __shfl_down_sync(0xffffffffu, dp_prev, m);
        const float next = __shfl_sync(0xffffffffu, dp, (lane + m) % 32);
        acc = fmaf(w[m], lane + m < 32 ? down : next, acc);
      }
      const int jp = j - 32;
      if (jp < L) dxr[a.reverse ? L - 1 - jp : jp] = acc;
    }
    x_prev = cur;
    dp_prev = dp;
  }
#pragma unroll
  for (int k = 0; k < kSums; ++k) {
#pragma unroll
    for (int off = 16; off > 0; off /= 2) sums[k] += __shfl_xor_sync(0xffffffffu, sums[k], off);
  }
}

// A warp a row, rows in channel-major order (row = c * batch + b).
template <typename T>
__global__ void __launch_bounds__(kConvBwdThreads) conv1d_bwd_kernel(const ConvBwdArgs a) {
  PARTOOL_DYNAMIC_SHARED(float, s_sums);
  int* s_channel = reinterpret_cast<int*>(s_sums + kConvBwdWarps * kSums);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kConvBwdWarps + warp;
  const int c = static_cast<int>(row / a.batch);
  const bool has_row = row < static_cast<int64_t>(a.batch) * a.dim;  // the same for the whole warp
  float sums[kSums] = {};
  if (has_row) conv_bwd_row<T>(a, static_cast<int>(row % a.batch), c, sums);
  if (lane == 0) {
    s_channel[warp] = has_row ? c : -1;
    for (int k = 0; k < kSums; ++k) s_sums[warp * kSums + k] = has_row ? sums[k] : 0.0f;
  }
  __syncthreads();
  // A thread per (warp, sum): the first warp of each run of warps on one channel adds the run's sums.
  const int w = threadIdx.x / kSums, k = threadIdx.x % kSums;
  if (w >= kConvBwdWarps) return;
  const int ch = s_channel[w];
  if (ch < 0 || (w > 0 && s_channel[w - 1] == ch)) return;
  float total = 0.0f;
  for (int v = w; v < kConvBwdWarps && s_channel[v] == ch; ++v) total += s_sums[v * kSums + k];
  if (k < a.width) {
    atomicAdd(a.dweight + static_cast<int64_t>(ch) * a.width + a.width - 1 - k, total);
  } else if (k == kSums - 1 && a.dbias != nullptr) {
    atomicAdd(a.dbias + ch, total);
  }
}

int conv_bwd(const partool_conv1d_bwd_params_t* p, void* cuda_stream, const char* where) {
  if (int s = validate_conv_bwd(p, where)) return s;
  DeviceInfo dev;  // no usable device: PARTOOL_ERR_NO_CUDA before anything is enqueued
  if (int s = device_info(&dev, where)) return s;
  const partool_conv1d_params_t& f = p->fwd;
  const struct {
    const void* ptr;
    const char* name;
  } ptrs[] = {{f.x, "x"},       {f.weight, "weight"},   {f.bias, "bias"}, {p->dout, "dout"},
              {p->dx, "dx"},    {p->dweight, "dweight"}, {p->dbias, "dbias"}};
  for (const auto& x : ptrs) {
    if (int s = check_device_ptr(x.ptr, x.name, where)) return s;
  }
  const partool_conv1d_params_t q = with_strides(f);
  const int64_t blocks = (static_cast<int64_t>(q.batch) * q.dim + kConvBwdWarps - 1) / kConvBwdWarps;
  if (blocks > 0x7fffffff) {
    return fail(PARTOOL_ERR_UNSUPPORTED_SHAPE, "%s: %lld rows, more than the kernel indexes", where,
                static_cast<long long>(q.batch) * q.dim);
  }
  ConvBwdArgs args{};
  args.x = q.x;
  args.weight = q.weight;
  args.bias = q.bias;
  args.dout = p->dout;
  args.dx = p->dx;
  args.dweight = p->dweight;
  args.dbias = p->dbias;
  args.batch_stride = q.batch_stride;
  args.dim_stride = q.dim_stride;
  args.batch = q.batch;
  args.dim = q.dim;
  args.length = q.length;
  args.width = q.width;
  args.silu = q.silu;
  args.reverse = q.reverse;
  auto stream = static_cast<cudaStream_t>(cuda_stream);
  cudaError_t err = zero_async(p->dweight, sizeof(float) * q.dim * q.width, stream);
  if (err == cudaSuccess) err = zero_async(p->dbias, sizeof(float) * q.dim, stream);
  if (err != cudaSuccess) return fail(PARTOOL_ERR_CUDA, "%s: cudaMemsetAsync failed: %s", where, error_string(err));
  const unsigned nblocks = static_cast<unsigned>(blocks);
  switch (q.io_dtype) {
    case PARTOOL_DTYPE_F16:
      err = launch_kernel(conv1d_bwd_kernel<__half>, nblocks, kConvBwdThreads, kConvBwdSharedBytes, stream, args);
      break;
    case PARTOOL_DTYPE_BF16:
      err = launch_kernel(conv1d_bwd_kernel<__nv_bfloat16>, nblocks, kConvBwdThreads, kConvBwdSharedBytes, stream,
                          args);
      break;
    default:
      err = launch_kernel(conv1d_bwd_kernel<float>, nblocks, kConvBwdThreads, kConvBwdSharedBytes, stream, args);
  }
  if (err != cudaSuccess) return fail(PARTOOL_ERR_CUDA, "%s: kernel launch failed: %s", where, error_string(err));
  clear_error();
  return PARTOOL_OK;
}

}  // namespace
}  // namespace partool

extern "C" int partool_causal_conv1d_bwd_cuda(const partool_conv1d_bwd_params_t* p, void* cuda_stream) {
  return partool::conv_bwd(p, cuda_stream, "partool_causal_conv1d_bwd_cuda");
}
