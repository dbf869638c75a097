// cuda_emu.h: run CUDA kernel sources on the host, for tests. A test tool, not a product.
//
// Included by csrc/common.cuh instead of <cuda_runtime.h> when PYGAN_EMULATION is defined and the
// host compiler (g++ -std=c++20) compiles the .cu files. What it does:
//   * __global__/__device__/__host__/__constant__/__launch_bounds__ vanish, __forceinline__ is
//     `inline`, __shared__ is `static` (only one block is alive at a time, launches are serialised);
//   * dim3/uint3/float2/float4, threadIdx/blockIdx/blockDim/gridDim (thread_local), warpSize;
//   * pygan_emu::launch (used by PYGAN_LAUNCH) runs the grid's blocks one after another, each
//     block's threads as real std::threads (created once per launch); __syncthreads() is a
//     std::barrier over the block; a thread that returns early drops out of every barrier;
//   * warp shuffles/votes exchange values through a per-warp buffer between two per-warp barriers;
//     all live lanes of the warp must take part (a mask missing a live lane aborts with a message);
//     reading a lane that does not exist or has returned gives poison (all bits set: NaN, -1);
//   * dynamic shared memory (PYGAN_DYNAMIC_SMEM in common.cuh) is a per-launch buffer filled with
//     poison (0xFF bytes) before every block; static __shared__ is NOT poisoned;
//   * atomics via std::atomic_ref; the math intrinsics our kernels use; a few runtime calls
//     (errors, memset/memcpy, attributes); launch-configuration errors (zero or oversized grid or
//     block, too much dynamic smem) are reported through cudaGetLastError() as on a GPU.
// It catches indexing, tiling, boundary, launch-configuration and reduction bugs, and barriers
// missing between shared-memory phases often show up as wrong answers. It does not model timing,
// the memory model, coalescing, bank conflicts, register/occupancy limits, independent warp
// scheduling, or tensor-core/PTX instructions (kernels using those need an #ifdef'd fallback).
// Launches run synchronously; streams are opaque and ignored.
#pragma once
#if defined(__CUDACC__)
#error "cuda_emu.h is for the host compiler (PYGAN_EMULATION); nvcc uses the real CUDA headers"
#endif

#include <math.h>

#include <atomic>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <tuple>
#include <type_traits>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __constant__
#define __noinline__
#define __forceinline__ inline
#define __shared__ static
#define __launch_bounds__(...)
#define __align__(n) alignas(n)

// ---- types and built-in variables ----------------------------------------------------------
struct uint3 { unsigned x, y, z; };
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct alignas(8) float2 { float x, y; };
struct alignas(16) float4 { float x, y, z, w; };
inline float2 make_float2(float x, float y) { return {x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
constexpr int warpSize = 32;
inline thread_local uint3 threadIdx, blockIdx;
inline thread_local dim3 blockDim, gridDim;

// ---- math intrinsics -------------------------------------------------------------------------
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __powf(float x, float y) { return std::pow(x, y); }
inline float __fdividef(float x, float y) { return x / y; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fsqrt_rn(float x) { return std::sqrt(x); }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline float __saturatef(float x) { return x != x ? 0.0f : std::fmin(std::fmax(x, 0.0f), 1.0f); }
inline float __int_as_float(int v) { float f; std::memcpy(&f, &v, 4); return f; }
inline int __float_as_int(float f) { int v; std::memcpy(&v, &f, 4); return v; }
inline unsigned __float_as_uint(float f) { unsigned v; std::memcpy(&v, &f, 4); return v; }
inline float __uint_as_float(unsigned v) { float f; std::memcpy(&f, &v, 4); return f; }
template <class T> inline T __ldg(const T* p) { return *p; }
template <class A, class B> inline auto min(A a, B b) { return b < a ? b : a; }
template <class A, class B> inline auto max(A a, B b) { return a < b ? b : a; }

// ---- runtime API (the part launchers use) ----------------------------------------------------
using cudaStream_t = struct CUstream_st*;
enum cudaError_t {
  cudaSuccess = 0, cudaErrorInvalidValue = 1, cudaErrorInvalidConfiguration = 9,
  cudaErrorNoDevice = 100, cudaErrorLaunchFailure = 719,
};
enum cudaMemcpyKind { cudaMemcpyHostToHost, cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost,
                      cudaMemcpyDeviceToDevice, cudaMemcpyDefault };
enum cudaDeviceAttr { cudaDevAttrMaxThreadsPerBlock = 1, cudaDevAttrMultiProcessorCount = 16,
                      cudaDevAttrMaxSharedMemoryPerBlockOptin = 97 };
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };

namespace pygan_emu {
inline thread_local cudaError_t last_error = cudaSuccess;
inline std::map<const void*, int>& smem_limits() { static std::map<const void*, int> m; return m; }
constexpr int kDefaultSmem = 48 * 1024, kOptinSmem = 227 * 1024;
}  // namespace pygan_emu

inline const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument (emulated launch)";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    default: return "unspecified launch failure";
  }
}
inline cudaError_t cudaGetLastError() { auto e = pygan_emu::last_error; pygan_emu::last_error = cudaSuccess; return e; }
inline cudaError_t cudaPeekAtLastError() { return pygan_emu::last_error; }
inline cudaError_t cudaMemsetAsync(void* p, int v, std::size_t n, cudaStream_t = nullptr) { std::memset(p, v, n); return cudaSuccess; }
inline cudaError_t cudaMemcpyAsync(void* d, const void* s, std::size_t n, cudaMemcpyKind, cudaStream_t = nullptr) { std::memmove(d, s, n); return cudaSuccess; }
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
inline cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
inline cudaError_t cudaGetDevice(int* d) { *d = 0; return cudaSuccess; }
inline cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr a, int) {
  *v = a == cudaDevAttrMultiProcessorCount ? 4 : a == cudaDevAttrMaxThreadsPerBlock ? 1024 : pygan_emu::kOptinSmem;
  return cudaSuccess;
}
template <class F> cudaError_t cudaFuncSetAttribute(F* f, cudaFuncAttribute, int value) {
  if (value < 0 || value > pygan_emu::kOptinSmem) return cudaErrorInvalidValue;
  pygan_emu::smem_limits()[reinterpret_cast<const void*>(f)] = value;
  return cudaSuccess;
}

// ---- atomics ---------------------------------------------------------------------------------
template <class T> inline T atomicAdd(T* p, std::type_identity_t<T> v) { return std::atomic_ref<T>(*p).fetch_add(v); }
template <class T> inline T atomicSub(T* p, std::type_identity_t<T> v) { return std::atomic_ref<T>(*p).fetch_sub(v); }
template <class T> inline T atomicExch(T* p, std::type_identity_t<T> v) { return std::atomic_ref<T>(*p).exchange(v); }
template <class T> inline T atomicCAS(T* p, std::type_identity_t<T> cmp, std::type_identity_t<T> v) {
  std::atomic_ref<T>(*p).compare_exchange_strong(cmp, v);
  return cmp;  // the old value either way
}
template <class T> inline T atomicMax(T* p, std::type_identity_t<T> v) {
  std::atomic_ref<T> a(*p); T old = a.load();
  while (old < v && !a.compare_exchange_weak(old, v)) {}
  return old;
}
template <class T> inline T atomicMin(T* p, std::type_identity_t<T> v) {
  std::atomic_ref<T> a(*p); T old = a.load();
  while (v < old && !a.compare_exchange_weak(old, v)) {}
  return old;
}
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }

// ---- blocks, warps, launch -------------------------------------------------------------------
namespace pygan_emu {
constexpr std::uint64_t kPoison = ~std::uint64_t{0};
struct Warp {
  explicit Warp(int lanes) : bar(lanes), live(lanes == 32 ? ~0u : (1u << lanes) - 1) {
    for (auto& s : slot) s = kPoison;
  }
  std::barrier<> bar;
  std::uint64_t slot[32];
  std::atomic<unsigned> live;
};
struct Block {
  explicit Block(int n) : bar(n) {
    for (int w = 0; w * 32 < n; ++w) warps.push_back(std::make_unique<Warp>(std::min(32, n - 32 * w)));
  }
  std::barrier<> bar;
  std::vector<std::unique_ptr<Warp>> warps;
};
inline Block* current_block = nullptr;           // one block alive at a time
inline unsigned char* dynamic_smem = nullptr;    // PYGAN_DYNAMIC_SMEM points here
inline thread_local int lane = 0, warp_id = 0;

inline Warp& my_warp() { return *current_block->warps[warp_id]; }
inline void check_mask(unsigned mask, const char* what) {
  unsigned live = my_warp().live.load();
  if ((mask & live) != live) {
    std::fprintf(stderr, "pygan emulation: %s with mask 0x%08x leaves out live lanes 0x%08x; "
                 "only whole-warp warp operations are emulated\n", what, mask, live);
    std::abort();
  }
}
// Every live lane publishes v; each reads lane src(lane) (own value when src returns own lane).
template <class T, class Src> T exchange(unsigned mask, T v, Src src, const char* what) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>);
  check_mask(mask, what);
  Warp& w = my_warp();
  std::uint64_t bits = kPoison;
  std::memcpy(&bits, &v, sizeof(T));
  w.slot[lane] = bits;
  w.bar.arrive_and_wait();
  const int s = src(lane);
  T out = v;
  if (s != lane) std::memcpy(&out, &w.slot[s & 31], sizeof(T));
  w.bar.arrive_and_wait();
  return out;
}
inline unsigned ballot(unsigned mask, int pred, const char* what) {
  check_mask(mask, what);
  Warp& w = my_warp();
  w.slot[lane] = pred != 0;
  w.bar.arrive_and_wait();
  unsigned out = 0, m = mask & w.live.load();
  for (int i = 0; i < 32; ++i) if ((m >> i & 1u) && w.slot[i] == 1) out |= 1u << i;
  w.bar.arrive_and_wait();
  return out;
}

inline std::mutex& launch_mutex() { static std::mutex m; return m; }

template <class... KArgs, class... Args>
void launch(void (*kernel)(KArgs...), dim3 grid, dim3 block, std::size_t smem, cudaStream_t, Args&&... args) {
  std::tuple<std::decay_t<KArgs>...> params(std::forward<Args>(args)...);  // converted as for a call
  const unsigned long long nthreads = 1ull * block.x * block.y * block.z;
  auto lim = smem_limits().find(reinterpret_cast<const void*>(kernel));
  const std::size_t smem_max = lim == smem_limits().end() ? kDefaultSmem : lim->second;
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.x > 0x7fffffffu || grid.y > 65535 ||
      grid.z > 65535 || nthreads == 0 || nthreads > 1024 || block.z > 64 || smem > smem_max) {
    last_error = cudaErrorInvalidConfiguration;
    return;
  }
  std::lock_guard<std::mutex> lock(launch_mutex());
  struct alignas(16) Chunk { unsigned char b[16]; };
  std::vector<Chunk> smem_buf((smem + 15) / 16);
  dynamic_smem = smem ? smem_buf[0].b : nullptr;
  const int n = static_cast<int>(nthreads);
  std::barrier<> gate(n + 1);  // main thread + workers: start of a block, end of a block
  std::unique_ptr<Block> blk;
  uint3 bidx{0, 0, 0};
  bool done = false;
  std::vector<std::thread> workers;
  workers.reserve(n);
  for (int t = 0; t < n; ++t) {
    workers.emplace_back([&, t] {
      threadIdx = uint3{t % block.x, t / block.x % block.y, t / (block.x * block.y)};
      blockDim = block;
      gridDim = grid;
      lane = t % 32;
      warp_id = t / 32;
      for (;;) {
        gate.arrive_and_wait();
        if (done) return;
        blockIdx = bidx;
        std::apply(kernel, params);
        Warp& w = my_warp();  // this thread has returned: poison its lane, leave the barriers
        w.slot[lane] = kPoison;
        w.live.fetch_and(~(1u << lane));
        w.bar.arrive_and_drop();
        current_block->bar.arrive_and_drop();
        gate.arrive_and_wait();
      }
    });
  }
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x) {
        blk = std::make_unique<Block>(n);
        current_block = blk.get();
        if (smem) std::memset(smem_buf.data(), 0xFF, smem_buf.size() * sizeof(Chunk));
        bidx = uint3{x, y, z};
        gate.arrive_and_wait();  // run the block
        gate.arrive_and_wait();  // every thread has returned
      }
  done = true;
  gate.arrive_and_wait();
  for (auto& w : workers) w.join();
  current_block = nullptr;
  dynamic_smem = nullptr;
}
}  // namespace pygan_emu

// ---- block and warp intrinsics -----------------------------------------------------------------
inline void __syncthreads() { pygan_emu::current_block->bar.arrive_and_wait(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) {
  pygan_emu::check_mask(mask, "__syncwarp");
  pygan_emu::my_warp().bar.arrive_and_wait();
}
inline unsigned __activemask() { return pygan_emu::my_warp().live.load(); }
template <class T> T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
  return pygan_emu::exchange(mask, v, [&](int l) { return (l / width) * width + (src % width); }, "__shfl_sync");
}
template <class T> T __shfl_down_sync(unsigned mask, T v, unsigned d, int width = 32) {
  return pygan_emu::exchange(mask, v, [&](int l) { return int(l % width + d) < width ? l + int(d) : l; }, "__shfl_down_sync");
}
template <class T> T __shfl_up_sync(unsigned mask, T v, unsigned d, int width = 32) {
  return pygan_emu::exchange(mask, v, [&](int l) { return l % width >= int(d) ? l - int(d) : l; }, "__shfl_up_sync");
}
template <class T> T __shfl_xor_sync(unsigned mask, T v, int m, int width = 32) {
  return pygan_emu::exchange(mask, v, [&](int l) { int s = l ^ m; return s / width > l / width ? l : s; }, "__shfl_xor_sync");
}
inline unsigned __ballot_sync(unsigned mask, int p) { return pygan_emu::ballot(mask, p, "__ballot_sync"); }
inline int __any_sync(unsigned mask, int p) { return pygan_emu::ballot(mask, p, "__any_sync") != 0; }
inline int __all_sync(unsigned mask, int p) {
  unsigned m = mask & pygan_emu::my_warp().live.load();
  return pygan_emu::ballot(mask, p, "__all_sync") == m;
}
