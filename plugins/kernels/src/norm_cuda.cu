// CUDA residual add + RMSNorm over the channels of channel-major (batch, dim, length) data (see
// partool_kernels.h): one launch for what PyTorch runs as ~10 elementwise and reduction kernels
// between two Vim blocks (cast, add, square, mean, add eps, rsqrt, two products, casts).
//
// A block covers 32 positions of one batch, a lane each, so every warp load is 32 consecutive
// positions of one channel (coalesced); its 16 warps split the channels (warp w takes c = w, w + 16,
// ...), add their sums of squares through shared memory, and scale the same elements in a second pass.
// Each pass loads kBatch channels before it uses any, so the loads overlap even where residual_out
// aliases residual (in place) and the compiler may not move a load above a store.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "common.hpp"
#include "cuda_common.hpp"
#include "scan_cuda_common.cuh"

namespace partool {
namespace {

constexpr int kNormThreads = 512;
constexpr int kNormWarps = kNormThreads / 32;
constexpr int kBatch = 8;  // channels a thread loads before using them
constexpr size_t kNormSharedBytes = (kNormWarps + 1) * 32 * sizeof(float);

template <typename T>
__global__ void __launch_bounds__(kNormThreads)
    add_rms_norm_kernel(const T* __restrict__ x, const float* residual, const float* __restrict__ weight,
                        float* residual_out, T* __restrict__ out, int dim, int length, int tiles, float eps) {
  PARTOOL_DYNAMIC_SHARED(float, shared);  // [kNormWarps][32] partial sums of squares, then [32] scales
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int t = (blockIdx.x % tiles) * 32 + lane;
  const bool active = t < length;
  const int64_t first = static_cast<int64_t>(blockIdx.x / tiles) * dim * length + t;  // (b, channel 0, t)
  const int64_t step = static_cast<int64_t>(kNormWarps) * length;                    // to this warp's next channel

  float sumsq = 0.0f;
  if (active) {
    for (int c0 = warp; c0 < dim; c0 += kBatch * kNormWarps) {
      const int64_t i0 = first + static_cast<int64_t>(c0) * length;
      float r[kBatch];
#pragma unroll
      for (int k = 0; k < kBatch; ++k) {
        const bool in = c0 + k * kNormWarps < dim;
        r[k] = in ? to_float(x[i0 + k * step]) : 0.0f;
        if (residual != nullptr && in) r[k] += residual[i0 + k * step];
      }
#pragma unroll
      for (int k = 0; k < kBatch; ++k) {
        if (residual_out != nullptr && c0 + k * kNormWarps < dim) residual_out[i0 + k * step] = r[k];
        sumsq = fmaf(r[k], r[k], sumsq);
      }
    }
  }
  shared[warp * 32 + lane] = sumsq;
  __syncthreads();
  if (warp == 0) {
    float total = 0.0f;
    for (int w = 0; w < kNormWarps; ++w) total += shared[w * 32 + lane];
    shared[kNormWarps * 32 + lane] = 1.0f / sqrtf(total / static_cast<float>(dim) + eps);
  }
  __syncthreads();
  if (!active) return;
  const float scale = shared[kNormWarps * 32 + lane];
  for (int c0 = warp; c0 < dim; c0 += kBatch * kNormWarps) {
    const int64_t i0 = first + static_cast<int64_t>(c0) * length;
    float r[kBatch], w[kBatch];
#pragma unroll
    for (int k = 0; k < kBatch; ++k) {
      const bool in = c0 + k * kNormWarps < dim;
      w[k] = in ? weight[c0 + k * kNormWarps] : 0.0f;
      if (!in) {
        r[k] = 0.0f;
      } else if (residual_out != nullptr) {  // this thread's own writes of the first pass
        r[k] = residual_out[i0 + k * step];
      } else {
        r[k] = to_float(x[i0 + k * step]) + (residual != nullptr ? residual[i0 + k * step] : 0.0f);
      }
    }
#pragma unroll
    for (int k = 0; k < kBatch; ++k) {
      if (c0 + k * kNormWarps < dim) out[i0 + k * step] = from_float<T>(r[k] * scale * w[k]);
    }
  }
}

template <typename T>
cudaError_t launch_add_rms_norm(const partool_add_rms_norm_params_t& p, int tiles, cudaStream_t stream) {
  const unsigned blocks = static_cast<unsigned>(static_cast<int64_t>(p.batch) * tiles);  // < 2^31, checked
  return launch_kernel(add_rms_norm_kernel<T>, blocks, kNormThreads, kNormSharedBytes, stream,
                       static_cast<const T*>(p.x), p.residual, p.weight, p.residual_out, static_cast<T*>(p.out), p.dim,
                       p.length, tiles, p.eps);
}

}  // namespace
}  // namespace partool

extern "C" int partool_add_rms_norm_fwd_cuda(const partool_add_rms_norm_params_t* p, void* cuda_stream) {
  static const char* where = "partool_add_rms_norm_fwd_cuda";
  if (int s = partool::validate_add_rms_norm(p, where)) return s;
  partool::DeviceInfo dev;
  if (int s = partool::device_info(&dev, where)) return s;
  const struct {
    const void* ptr;
    const char* name;
  } ptrs[] = {{p->x, "x"}, {p->residual, "residual"}, {p->weight, "weight"}, {p->residual_out, "residual_out"},
              {p->out, "out"}};
  for (const auto& x : ptrs) {
    if (int s = partool::check_device_ptr(x.ptr, x.name, where)) return s;
  }
  const int tiles = (p->length + 31) / 32;
  if (static_cast<int64_t>(p->batch) * tiles > 0x7fffffff) {
    return partool::fail(PARTOOL_ERR_UNSUPPORTED_SHAPE, "%s: batch=%d x %d position tiles is more blocks than a grid holds",
                         where, p->batch, tiles);
  }
  auto stream = static_cast<cudaStream_t>(cuda_stream);
  cudaError_t err;
  switch (p->io_dtype) {
    case PARTOOL_DTYPE_F16:
      err = partool::launch_add_rms_norm<__half>(*p, tiles, stream);
      break;
    case PARTOOL_DTYPE_BF16:
      err = partool::launch_add_rms_norm<__nv_bfloat16>(*p, tiles, stream);
      break;
    default:
      err = partool::launch_add_rms_norm<float>(*p, tiles, stream);
  }
  if (err != cudaSuccess) return partool::fail(PARTOOL_ERR_CUDA, "%s: kernel launch failed: %s", where, partool::error_string(err));
  partool::clear_error();
  return PARTOOL_OK;
}
