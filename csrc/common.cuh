// common.cuh: what every kernel file (csrc/<op>.cu) includes first.
//
//   CUDA_CHECK(call)      throws std::runtime_error("CUDA error ... at file:line: <string>"); never
//                         exits. pybind11 turns it into a Python RuntimeError.
//   CEIL_DIV(a, b)        integer ceil(a / b) (and pygan::ceil_div for typed use); never wraps.
//   tile_pos, slice_end   64-bit tile/slice arithmetic for indices that may pass 2^31.
//   PYGAN_LAUNCH(kernel, grid, block, smem, stream, args...)
//                         THE way to launch: kernel<<<grid, block, smem, stream>>>(args...) plus a
//                         launch-error check under nvcc; the emulated launch (csrc/emu/cuda_emu.h)
//                         plus the same check under the host compiler with PYGAN_EMULATION.
//                         `kernel` must be one token-free-of-commas expression: for a template
//                         kernel bind it first, `auto kern = my_kernel<float, 4>;`.
//                         After every launch: a launch error throws a std::runtime_error naming
//                         the kernel, its grid and block, the launch site and the arguments of
//                         the op being run (their shapes; see pygan::describe_current_call);
//                         with PYGAN_CUDA_SYNC=1 (pygan::sync_debug) the stream is synchronised
//                         too, so a fault in the kernel is reported by that launch, not by a
//                         later, unrelated CUDA call.
//   PYGAN_SHARED(type, name, dims)
//                         a static shared-memory variable: `PYGAN_SHARED(float, tile, [16][17]);`
//                         is `__shared__ float tile[16][17];` under nvcc (dims may be empty, for
//                         a scalar). Never write `__shared__` yourself: under emulation the
//                         variable must be registered so it can be poisoned at every block start.
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
//   pygan::float4_rows_ok float4 loads fit: rows of M floats (M % 4 == 0), every non-null pointer 16-aligned.
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
#include <cstring>
#include <initializer_list>
#include <stdexcept>
#include <string>

namespace pygan {

[[noreturn]] inline void throw_cuda_error(cudaError_t err, const char* call, const char* file, int line) {
  throw std::runtime_error(std::string("CUDA error ") + std::to_string(static_cast<int>(err)) + " (" +
                           cudaGetErrorString(err) + ") from `" + call + "` at " + file + ":" +
                           std::to_string(line));
}

inline cudaStream_t stream_from(std::uintptr_t handle) { return reinterpret_cast<cudaStream_t>(handle); }

// ceil(a / b) for a >= 0, b > 0, without forming a + b - 1 (which wraps when a is within b of the
// type's maximum: ceil_div(2^31 - 100, 128) in int would be negative). Host and device.
template <class T>
__host__ __device__ constexpr T ceil_div(T a, T b) { return a / b + (a % b != 0 ? 1 : 0); }

// Index arithmetic near 2^31 (issue 13). Kernels whose operands each have fewer than 2^31 elements
// may keep 32-bit indices for in-range positions, but a tile origin plus an offset, or a slice's
// end, can pass 2^31 before the bounds check: these do that arithmetic in 64 bits.
//   tile_pos(block, tile, offset)   block * tile + offset
//   slice_end(z, chunk, total)      min(total, (z + 1) * chunk): the end of split z of [0, total)
__host__ __device__ constexpr std::int64_t tile_pos(std::int64_t block, std::int64_t tile, std::int64_t offset) {
  return block * tile + offset;
}
__host__ __device__ constexpr std::int64_t slice_end(std::int64_t z, std::int64_t chunk, std::int64_t total) {
  return (z + 1) * chunk < total ? (z + 1) * chunk : total;
}

inline void check_variant(int variant, int count, const char* family) {
  if (variant < 1 || variant > count)
    throw std::invalid_argument(std::string(family) + ": variant " + std::to_string(variant) +
                                " is not one of 1.." + std::to_string(count));
}

inline bool is_aligned(const void* p, std::size_t bytes) {
  return reinterpret_cast<std::uintptr_t>(p) % bytes == 0;
}

inline bool float4_rows_ok(std::int64_t M, std::initializer_list<const void*> ptrs) {
  if (M % 4 != 0) return false;
  for (const void* p : ptrs)
    if (p && !is_aligned(p, 16)) return false;
  return true;
}

int sm_count();  // defined below (inline) so every TU shares one cached value

// ---- launch checks (PYGAN_LAUNCH) ----------------------------------------------------------------
// Defined in bindings.cpp, which both modules are built from:
//   sync_debug()            PYGAN_CUDA_SYNC=1 in the environment (read at the first call), or as
//                           last set by set_sync_debug (Python: <module>.set_cuda_sync(flag)).
//   describe_current_call() "op(x (2, 3, 8, 8), w (4, 3, 3, 3), y (2, 4, 6, 6))": the op whose
//                           launcher is running on this thread, with the shapes of its array
//                           arguments, as the binding validated them ("" outside a binding).
bool sync_debug();
void set_sync_debug(bool on);
std::string describe_current_call();

inline std::string dim3_str(dim3 d) {
  return "(" + std::to_string(d.x) + ", " + std::to_string(d.y) + ", " + std::to_string(d.z) + ")";
}

// The message of a failed launch: CUDA's error, the kernel (as named at the launch site), its
// launch configuration, the launch site, the op and its arguments' shapes, and `detail` (the
// emulator's account of a fault; empty on a GPU).
inline std::string launch_error_message(cudaError_t err, const char* when, const char* kernel, dim3 grid,
                                        dim3 block, const char* file, int line, const std::string& detail) {
  const char* csrc = std::strstr(file, "csrc/");  // the path from the source tree's root
  if (csrc) file = csrc;
  std::string msg = std::string("CUDA error ") + std::to_string(static_cast<int>(err)) + " (" +
                    cudaGetErrorString(err) + ") " + when + " kernel `" + kernel + "` (grid " + dim3_str(grid) +
                    ", block " + dim3_str(block) + ") launched at " + file + ":" + std::to_string(line);
  const std::string call = describe_current_call();
  if (!call.empty()) msg += " by " + call;
  if (!detail.empty()) msg += ": " + detail;
  return msg;
}

}  // namespace pygan

#define CUDA_CHECK(call)                                                      \
  do {                                                                        \
    cudaError_t pygan_err_ = (call);                                          \
    if (pygan_err_ != cudaSuccess)                                            \
      ::pygan::throw_cuda_error(pygan_err_, #call, __FILE__, __LINE__);       \
  } while (0)

#define CEIL_DIV(a, b) (::pygan::ceil_div((a), (b)))  // no a + b - 1: see pygan::ceil_div

#ifdef PYGAN_EMULATION
// The emulated launch runs the kernel to completion (or to its first fault) before it returns, so
// what a GPU reports at the next synchronisation is already in cudaGetLastError(), with the
// emulator's detail; PYGAN_CUDA_SYNC changes nothing here.
#define PYGAN_LAUNCH(kernel, grid, block, smem, stream, ...)                                          \
  do {                                                                                                \
    ::pygan_emu::launch(#kernel, kernel, grid, block, smem, stream __VA_OPT__(, ) __VA_ARGS__);      \
    ::pygan::check_launch(#kernel, dim3(grid), dim3(block), stream, __FILE__, __LINE__);             \
  } while (0)
// One copy per concurrent-block slot (PYGAN_EMU_CONCURRENT_BLOCKS); `name` is this block's copy.
#define PYGAN_SHARED(type, name, ...)                                                                 \
  static struct {                                                                                      \
    type value __VA_ARGS__;                                                                            \
  } pygan_shared_slots_##name[::pygan_emu::kMaxConcurrentBlocks];                                      \
  [[maybe_unused]] static const bool pygan_shared_registered_##name =                                  \
      ::pygan_emu::register_shared(pygan_shared_slots_##name, sizeof(pygan_shared_slots_##name[0]));   \
  auto& name = pygan_shared_slots_##name[::pygan_emu::block_slot].value
#define PYGAN_DYNAMIC_SMEM(type, name) type* name = reinterpret_cast<type*>(::pygan_emu::dynamic_smem)
#else
#define PYGAN_LAUNCH(kernel, grid, block, smem, stream, ...)                                \
  do {                                                                                      \
    kernel<<<(grid), (block), (smem), (stream)>>>(__VA_ARGS__);                             \
    ::pygan::check_launch(#kernel, dim3(grid), dim3(block), stream, __FILE__, __LINE__);   \
  } while (0)
#define PYGAN_SHARED(type, name, ...) __shared__ type name __VA_ARGS__
#define PYGAN_DYNAMIC_SMEM(type, name)                              \
  extern __shared__ __align__(16) unsigned char pygan_dynamic_smem_[]; \
  type* name = reinterpret_cast<type*>(pygan_dynamic_smem_)
#endif

namespace pygan {

// After a launch: a launch error (bad configuration, too much shared memory, no device; under
// emulation also a fault while the kernel ran) throws; with sync_debug() on, the stream is
// synchronised and an execution error (illegal address, misaligned address, trap) throws too,
// naming this kernel. On a GPU such an error is sticky: the context is unusable afterwards.
inline void check_launch(const char* kernel, dim3 grid, dim3 block, cudaStream_t stream, const char* file,
                         int line) {
  cudaError_t err = cudaGetLastError();
#ifdef PYGAN_EMULATION
  if (err != cudaSuccess)
    throw std::runtime_error(launch_error_message(err, "in", kernel, grid, block, file, line,
                                                  ::pygan_emu::take_error_detail()));
  (void)stream;
#else
  if (err != cudaSuccess)
    throw std::runtime_error(launch_error_message(err, "launching", kernel, grid, block, file, line, ""));
  if (sync_debug()) {
    err = cudaStreamSynchronize(stream);
    if (err == cudaSuccess) err = cudaGetLastError();
    if (err != cudaSuccess)
      throw std::runtime_error(launch_error_message(err, "found by PYGAN_CUDA_SYNC=1 in",
                                                    kernel, grid, block, file, line, ""));
  }
#endif
}

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
  PYGAN_SHARED(T, partial, [32]);
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
  PYGAN_SHARED(T, partial, [32]);
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
