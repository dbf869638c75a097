// common.cuh: what every kernel file (csrc/<op>.cu) includes first.
//
//   CUDA_CHECK(call)      throws std::runtime_error("CUDA error ... at file:line: <string>"); never
//                         exits. pybind11 turns it into a Python RuntimeError.
//   CEIL_DIV(a, b)        integer ceil(a / b) (and pygan::ceil_div for typed use).
//   PYGAN_LAUNCH(kernel, grid, block, smem, stream, args...)
//                         THE way to launch: kernel<<<grid, block, smem, stream>>>(args...) plus a
//                         launch-error check under nvcc; the emulated launch (csrc/emu/cuda_emu.h)
//                         plus the same check under the host compiler with PYGAN_EMULATION.
//                         `kernel` must be one token-free-of-commas expression: for a template
//                         kernel bind it first, `auto kern = my_kernel<float, 4>;`.
//   PYGAN_DYNAMIC_SMEM(type, name)
//                         `type* name` pointing at the block's dynamic shared memory (the smem
//                         argument of the launch), 16-byte aligned. Never write `extern __shared__`
//                         yourself: it does not emulate.
//   warp_reduce_sum/max   butterfly (__shfl_xor_sync) over a full warp; every lane gets the result.
//   block_reduce_sum/max  over a 1-D block whose blockDim.x is a multiple of 32 (<= 1024); every
//                         thread must call it, every thread gets the result (bitwise the same).
//   pygan::stream_from    cudaStream_t from the integer handle Python passes (CuPy's stream.ptr).
//   pygan::check_variant  std::invalid_argument (-> Python ValueError) for an unknown variant.
//   pygan::sm_count       multiprocessors of the current device (cached), to size grid-stride grids.
//   pygan::is_aligned     pointer alignment test for vectorised variants.
//
// Launcher conventions (see csrc/activation.cu for the pattern): declared in csrc/launchers.h as
// plain C++ (raw float pointers, int64_t sizes, `int variant`, `std::uintptr_t stream`), so
// bindings.cpp needs no CUDA header; they allocate nothing, skip the launch when there is no work
// (a zero-sized grid is a launch error), and launch only through PYGAN_LAUNCH.
#pragma once

#ifdef PYGAN_EMULATION
#include "emu/cuda_emu.h"
#else
#include <cuda_runtime.h>
#endif

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace pygan {

[[noreturn]] inline void throw_cuda_error(cudaError_t err, const char* call, const char* file, int line) {
  throw std::runtime_error(std::string("CUDA error ") + std::to_string(static_cast<int>(err)) + " (" +
                           cudaGetErrorString(err) + ") from `" + call + "` at " + file + ":" +
                           std::to_string(line));
}

inline cudaStream_t stream_from(std::uintptr_t handle) { return reinterpret_cast<cudaStream_t>(handle); }

template <class T>
constexpr T ceil_div(T a, T b) { return (a + b - 1) / b; }

inline void check_variant(int variant, int count, const char* family) {
  if (variant < 1 || variant > count)
    throw std::invalid_argument(std::string(family) + ": variant " + std::to_string(variant) +
                                " is not one of 1.." + std::to_string(count));
}

inline bool is_aligned(const void* p, std::size_t bytes) {
  return reinterpret_cast<std::uintptr_t>(p) % bytes == 0;
}

int sm_count();  // defined below (inline) so every TU shares one cached value

}  // namespace pygan

#define CUDA_CHECK(call)                                                      \
  do {                                                                        \
    cudaError_t pygan_err_ = (call);                                          \
    if (pygan_err_ != cudaSuccess)                                            \
      ::pygan::throw_cuda_error(pygan_err_, #call, __FILE__, __LINE__);       \
  } while (0)

#define CEIL_DIV(a, b) (((a) + (b) - 1) / (b))

#ifdef PYGAN_EMULATION
#define PYGAN_LAUNCH(kernel, grid, block, smem, stream, ...)                            \
  do {                                                                                  \
    ::pygan_emu::launch(kernel, grid, block, smem, stream __VA_OPT__(, ) __VA_ARGS__); \
    CUDA_CHECK(cudaGetLastError());                                                     \
  } while (0)
#define PYGAN_DYNAMIC_SMEM(type, name) type* name = reinterpret_cast<type*>(::pygan_emu::dynamic_smem)
#else
#define PYGAN_LAUNCH(kernel, grid, block, smem, stream, ...)        \
  do {                                                              \
    kernel<<<(grid), (block), (smem), (stream)>>>(__VA_ARGS__);     \
    CUDA_CHECK(cudaGetLastError());                                 \
  } while (0)
#define PYGAN_DYNAMIC_SMEM(type, name)                              \
  extern __shared__ __align__(16) unsigned char pygan_dynamic_smem_[]; \
  type* name = reinterpret_cast<type*>(pygan_dynamic_smem_)
#endif

namespace pygan {

inline int sm_count() {
  static const int count = [] {
    int device = 0, n = 0;
    CUDA_CHECK(cudaGetDevice(&device));
    CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device));
    return n;
  }();
  return count;
}

// ---- reductions ------------------------------------------------------------------------------

template <class T>
__device__ __forceinline__ T warp_reduce_sum(T v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

template <class T>
__device__ __forceinline__ T warp_reduce_max(T v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) {
    T other = __shfl_xor_sync(0xffffffffu, v, offset);
    v = (other > v || other != other) ? other : v;  // NaN wins, as in a NaN-propagating max
  }
  return v;
}

// Sum over a 1-D block (blockDim.x a multiple of 32). Ends with __syncthreads(), so it may be
// called again right away. Deterministic for a given blockDim.
template <class T>
__device__ __forceinline__ T block_reduce_sum(T v) {
  __shared__ T partial[32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nwarps = blockDim.x / 32;
  v = warp_reduce_sum(v);
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  v = lane < nwarps ? partial[lane] : T(0);
  v = warp_reduce_sum(v);
  __syncthreads();
  return v;
}

template <class T>
__device__ __forceinline__ T block_reduce_max(T v, T identity) {
  __shared__ T partial[32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nwarps = blockDim.x / 32;
  v = warp_reduce_max(v);
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  v = lane < nwarps ? partial[lane] : identity;
  v = warp_reduce_max(v);
  __syncthreads();
  return v;
}

}  // namespace pygan
