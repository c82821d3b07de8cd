// Host-side helpers shared by the CUDA entry points: the current device's limits, a check that a
// pointer is device memory (a host pointer would fault inside a kernel and poison the context), and
// the kernel launch. Built with PARTOOL_CUDA_EMULATION (emulation/), the same calls run on the CPU
// emulator instead: host memory stands in for device memory and launches run synchronously.
#pragma once

#include <cuda_runtime.h>

#include "common.hpp"
#ifdef PARTOOL_CUDA_EMULATION
#include "cuda_emulator.hpp"
#endif

namespace partool {

struct DeviceInfo {
  int sms = 0;
  int smem_optin = 0;  // bytes of shared memory a block may opt into
};

// The message of a CUDA status from launch_kernel or the runtime.
inline const char* error_string(cudaError_t err) {
#ifdef PARTOOL_CUDA_EMULATION
  return err == cudaSuccess ? "no error" : emu::last_error();
#else
  return cudaGetErrorString(err);
#endif
}

inline int device_info(DeviceInfo* info, const char* where) {
#ifdef PARTOOL_CUDA_EMULATION
  (void)where;
  info->sms = emu::device().sms;
  info->smem_optin = emu::device().smem_optin;
  return PARTOOL_OK;
#else
  int dev = 0;
  cudaError_t err = cudaGetDevice(&dev);
  if (err == cudaSuccess) err = cudaDeviceGetAttribute(&info->sms, cudaDevAttrMultiProcessorCount, dev);
  if (err == cudaSuccess) err = cudaDeviceGetAttribute(&info->smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
  if (err != cudaSuccess) {
    cudaGetLastError();
    return fail(PARTOOL_ERR_NO_CUDA, "%s: no usable CUDA device (%s)", where, cudaGetErrorString(err));
  }
  return PARTOOL_OK;
#endif
}

inline int check_device_ptr(const void* ptr, const char* name, const char* where) {
#ifdef PARTOOL_CUDA_EMULATION
  (void)ptr, (void)name, (void)where;
  return PARTOOL_OK;
#else
  if (ptr == nullptr) return PARTOOL_OK;
  cudaPointerAttributes attr{};
  const cudaError_t err = cudaPointerGetAttributes(&attr, ptr);
  if (err != cudaSuccess) {
    cudaGetLastError();
    return fail(PARTOOL_ERR_INVALID_ARGUMENT, "%s: %s is not a CUDA pointer (%s)", where, name, cudaGetErrorString(err));
  }
  if (attr.type != cudaMemoryTypeDevice && attr.type != cudaMemoryTypeManaged) {
    return fail(PARTOOL_ERR_INVALID_ARGUMENT, "%s: %s is host memory; the CUDA kernels take device pointers", where, name);
  }
  return PARTOOL_OK;
#endif
}

// Enqueues a zero fill of `bytes` at device pointer `ptr` (nothing for NULL): the gradients that kernels sum
// with atomics start from it. The status (the runtime's error state is cleared on failure).
inline cudaError_t zero_async(void* ptr, size_t bytes, cudaStream_t stream) {
  if (ptr == nullptr || bytes == 0) return cudaSuccess;
  const cudaError_t err = cudaMemsetAsync(ptr, 0, bytes, stream);  // the emulator's: a plain memset
#ifndef PARTOOL_CUDA_EMULATION
  if (err != cudaSuccess) cudaGetLastError();
#endif
  return err;
}

// Launches kernel<<<blocks, threads, smem, stream>>>(args...), opting into `smem` bytes of dynamic
// shared memory first; the launch status (the runtime's error state is cleared on failure).
template <typename... Params, typename... Args>
cudaError_t launch_kernel(void (*kernel)(Params...), unsigned blocks, unsigned threads, size_t smem, cudaStream_t stream,
                          Args... args) {
#ifdef PARTOOL_CUDA_EMULATION
  (void)stream;
  return emu::launch(dim3(blocks), dim3(threads), smem, [&] { kernel(args...); });
#else
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
  if (err == cudaSuccess) {
    kernel<<<blocks, threads, smem, stream>>>(args...);
    err = cudaGetLastError();
  }
  if (err != cudaSuccess) cudaGetLastError();
  return err;
#endif
}

}  // namespace partool
