// Host-side helpers shared by the CUDA entry points: the current device's limits and a check that
// a pointer is device memory (a host pointer would fault inside a kernel and poison the context).
#pragma once

#include <cuda_runtime.h>

#include "common.hpp"

namespace partool {

struct DeviceInfo {
  int sms = 0;
  int smem_optin = 0;  // bytes of shared memory a block may opt into
};

inline int device_info(DeviceInfo* info, const char* where) {
  int dev = 0;
  cudaError_t err = cudaGetDevice(&dev);
  if (err == cudaSuccess) err = cudaDeviceGetAttribute(&info->sms, cudaDevAttrMultiProcessorCount, dev);
  if (err == cudaSuccess) err = cudaDeviceGetAttribute(&info->smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
  if (err != cudaSuccess) {
    cudaGetLastError();
    return fail(PARTOOL_ERR_NO_CUDA, "%s: no usable CUDA device (%s)", where, cudaGetErrorString(err));
  }
  return PARTOOL_OK;
}

inline int check_device_ptr(const void* ptr, const char* name, const char* where) {
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
}

}  // namespace partool
