// CUDA runtime queries for pygan._C. Safe on machines with no GPU and no driver: every error
// becomes a plain answer (0 devices), and the runtime's sticky "last error" is cleared.
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

int pygan_cuda_device_count() {
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    cudaGetLastError();  // clear it so the next CUDA call does not report it
    return 0;
  }
  return count;
}

std::string pygan_cuda_runtime_version() {
  int version = 0;
  if (cudaRuntimeGetVersion(&version) != cudaSuccess) {
    cudaGetLastError();
    version = CUDART_VERSION;  // the version compiled against
  }
  return std::to_string(version / 1000) + "." + std::to_string((version % 1000) / 10);
}

// True when ptr is CUDA device (or managed) memory; used by bindings.cpp to validate arrays.
bool pygan_cuda_is_device_pointer(std::uintptr_t ptr) {
  cudaPointerAttributes attr{};
  if (cudaPointerGetAttributes(&attr, reinterpret_cast<const void*>(ptr)) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return attr.type == cudaMemoryTypeDevice || attr.type == cudaMemoryTypeManaged;
}
