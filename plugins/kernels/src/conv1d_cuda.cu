// CUDA depthwise conv1d (+ SiLU) along the sequence, causal or anti-causal (see partool_kernels.h).
// Memory-bound: one thread per output element, consecutive threads on consecutive positions, so
// the width-many neighbouring reads of a warp fall in the same cache lines.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "common.hpp"
#include "cuda_common.hpp"

namespace partool {
namespace {

__device__ __forceinline__ float cv_to_float(float x) { return x; }
__device__ __forceinline__ float cv_to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float cv_to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ void cv_store(float* p, float v) { *p = v; }
__device__ __forceinline__ void cv_store(__half* p, float v) { *p = __float2half_rn(v); }
__device__ __forceinline__ void cv_store(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }

template <typename T>
__global__ void __launch_bounds__(256) conv1d_kernel(const T* __restrict__ x, const float* __restrict__ weight,
                                                     const float* __restrict__ bias, T* __restrict__ out, int64_t total,
                                                     int dim, int length, int width, int silu, int reverse) {
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t row = e / length;
    const int t = static_cast<int>(e - row * length);
    const int c = static_cast<int>(row % dim);
    const T* xr = x + row * length;
    float acc = bias != nullptr ? bias[c] : 0.0f;
    for (int k = 0; k < width; ++k) {
      const int s = reverse ? t + (width - 1) - k : t - (width - 1) + k;
      if (s >= 0 && s < length) acc = fmaf(weight[static_cast<int64_t>(c) * width + k], cv_to_float(xr[s]), acc);
    }
    if (silu) acc = acc / (1.0f + __expf(-acc));
    cv_store(out + e, acc);
  }
}

template <typename T>
cudaError_t launch_conv(const partool_conv1d_params_t& p, cudaStream_t stream) {
  const int64_t total = static_cast<int64_t>(p.batch) * p.dim * p.length;
  const int64_t want = (total + 255) / 256;
  const unsigned blocks = static_cast<unsigned>(want < 65535 * 16 ? want : 65535 * 16);
  return launch_kernel(conv1d_kernel<T>, blocks, 256, 0, stream, static_cast<const T*>(p.x), p.weight, p.bias,
                       static_cast<T*>(p.out), total, p.dim, p.length, p.width, p.silu, p.reverse);
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
  auto stream = static_cast<cudaStream_t>(cuda_stream);
  cudaError_t err;
  switch (p->io_dtype) {
    case PARTOOL_DTYPE_F16:
      err = partool::launch_conv<__half>(*p, stream);
      break;
    case PARTOOL_DTYPE_BF16:
      err = partool::launch_conv<__nv_bfloat16>(*p, stream);
      break;
    default:
      err = partool::launch_conv<float>(*p, stream);
  }
  if (err != cudaSuccess) return partool::fail(PARTOOL_ERR_CUDA, "%s: kernel launch failed: %s", where, partool::error_string(err));
  partool::clear_error();
  return PARTOOL_OK;
}
