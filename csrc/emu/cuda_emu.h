// cuda_emu.h: run CUDA kernel sources on the host, for tests. A test tool, not a product.
//
// Included by csrc/common.cuh instead of <cuda_runtime.h> when PYGAN_EMULATION is defined and the
// host compiler (g++ -std=c++20) compiles the .cu files. What it does:
//   * __global__/__device__/__host__/__constant__/__launch_bounds__ vanish, __forceinline__ is
//     `inline`; static shared memory is PYGAN_SHARED (common.cuh): a static variable (one copy per
//     block that may be alive at once), registered the first time a thread reaches its declaration
//     (bare `__shared__` does not compile here);
//   * dim3/uint3/float2/float4, threadIdx/blockIdx/blockDim/gridDim (thread_local), warpSize;
//   * pygan_emu::launch (used by PYGAN_LAUNCH) runs the grid's blocks one at a time (or two at a
//     time, below), each block's threads as real std::threads (created once per launch);
//   * the blocks run in a SHUFFLED order, a permutation drawn per launch from the emulation seed
//     and the launch's number: a kernel that assumes block b runs after block b-1 (or reads what
//     another block writes in the same launch) fails. The seed is PYGAN_EMU_SEED (read at the first
//     launch; random when unset) or the last set_seed(); tests/conftest.py sets it before every
//     test and prints it when a test fails, so `PYGAN_EMU_SEED=<seed> pytest <test>` replays it;
//   * EVERY shared-memory byte, static (PYGAN_SHARED) and dynamic (PYGAN_DYNAMIC_SMEM), is poison
//     (0xFF: NaN as a float, -1 as an integer) at the start of every block: a read before the
//     block wrote it shows, as it would read garbage on a GPU;
//   * __syncthreads() is a std::barrier over the block that also checks every thread waits at the
//     SAME __syncthreads() (source line): threads of one block at different barriers (a barrier in
//     divergent code) is a fault, not a count. A thread that returns leaves every barrier (the
//     threads still running may go on synchronising among themselves, as on a GPU);
//   * warp shuffles/votes exchange values through a per-warp buffer between two per-warp barriers;
//     all live lanes of the warp must take part (a mask missing a live lane aborts with a message);
//     reading a lane that does not exist or has returned gives poison (all bits set: NaN, -1);
//   * mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 (pygan_emu::mma_m16n8k8_tf32, used through
//     csrc/ptx.cuh) is a warp-collective step implemented exactly as the PTX ISA's "Matrix Fragments
//     for mma.m16n8k8" (.tf32) lays the fragments out: the 32 lanes publish their a0..a3, b0, b1,
//     c0..c3 in a per-warp buffer between two per-warp barriers, each lane gathers A (16x8), B (8x8)
//     and C (16x8), rounds A and B to TF32 (cvt.rna) and computes its own four D entries in float32
//     (k in order 0..7; a product of two TF32 values is exact in float32). All 32 lanes must take
//     part: a warp with a lane missing (returned, or a partial warp) is a fault, as a divergent
//     __syncthreads() is. cvt.rna.tf32.f32 (pygan_emu::cvt_rna_tf32) rounds to nearest, ties away
//     from zero, to a 10-bit mantissa; cp.async (+ commit/wait groups) is a plain copy at issue
//     time (zero-fill when the source size is 0), which is one legal schedule of the real thing;
//   * float2/float4 loads and stores (copying one out of or into memory, as `v = p4[i]` and
//     `p4[i] = v` do) check that the address is aligned to the vector's size, 8 or 16 bytes, and
//     fault if not, as the GPU does (cudaErrorMisalignedAddress);
//   * a fault (misaligned vector access, divergent barrier, an exception out of the kernel) stops
//     the thread, skips the blocks not yet started, and is reported by cudaGetLastError() with a
//     detail naming the fault, the thread and the block: PYGAN_LAUNCH turns it into a
//     RuntimeError naming the kernel and the op's argument shapes;
//   * PYGAN_EMU_CONCURRENT_BLOCKS=2 (read at every launch; default 1) runs the blocks in pairs (in
//     the shuffled order), both alive at once, each with its own shared memory. The threads of the
//     pair share one barrier: a __syncthreads() completes when every thread of BOTH blocks has
//     reached one (each at its own block's barrier), so the two run in lockstep, phase by phase.
//     A kernel that is right only when its blocks run one after another (a block reading another's
//     output of the same launch, a read-modify-write of global memory without atomics, a "last
//     block finishes the reduction" ticket taken non-atomically) then fails deterministically when
//     the read and the write are in different phases (the self-test's racy_last_block); within
//     one phase the two blocks' threads race for real, so a race there shows only sometimes;
//   * PYGAN_EMU_SKIP_LAUNCH=1 (read at every launch) makes every launch return at once without
//     running the kernel: the deliberately broken build that tests/test_cannot_be_fooled.py runs
//     the emulated tests against, to prove they fail when a kernel writes nothing;
//   * atomics via std::atomic_ref; the math intrinsics our kernels use; a few runtime calls
//     (errors, memset/memcpy, attributes); launch-configuration errors (zero or oversized grid or
//     block, too much dynamic smem) are reported through cudaGetLastError() as on a GPU.
// It catches indexing, tiling, boundary, launch-configuration and reduction bugs, reads of
// shared memory before it is written, inter-block ordering assumptions, misaligned vector access
// and divergent barriers; barriers missing between shared-memory phases often show up as wrong
// answers. What it still CANNOT catch:
//   * races: the threads of a block really run concurrently, but the host's memory model and
//     timing differ from a GPU's, so a missing __syncthreads()/__syncwarp() or a missing fence
//     passes whenever the host happens to order the accesses (use compute-sanitizer racecheck on
//     a GPU);
//   * inter-block concurrency beyond a pair: by default one block runs at a time; with
//     PYGAN_EMU_CONCURRENT_BLOCKS=2 two do, in lockstep at barriers, so a race between blocks
//     whose read and write fall in the same barrier phase is caught only by chance, a race among
//     three or more blocks, or between blocks that are never paired in the shuffled order, not at
//     all, and a block spin-waiting on another (a grid-wide barrier, a flag handshake) hangs in
//     lockstep unless the other block reaches no barrier first (use a GPU: cooperative launches
//     are not emulated). Memory fences (__threadfence) are host fences: a missing one never shows;
//   * independent warp scheduling and implicit warp synchrony: lanes of a warp run as independent
//     threads; code that assumes lock-step execution without __syncwarp() may pass;
//   * a thread of a warp at a warp operation while another lane of it waits at __syncthreads()
//     hangs rather than reporting (mixed barriers are undefined on a GPU too);
//   * a vector access through a reference or pointer that is never copied as a whole (`p4[i].x`
//     reads one float here, and nvcc may still emit a vector load), and vector types other than
//     float2/float4 (none are used); out-of-bounds global accesses (host memory: use ASan, or
//     compute-sanitizer memcheck on a GPU) unless they land outside mapped memory;
//   * timing, coalescing, bank conflicts, register/occupancy limits, and tensor-core/PTX
//     instructions other than the three above (kernels using those need an #ifdef'd fallback;
//     conv2d's wmma TF32 variant 5 has none and is refused under emulation; its mma.sync variant 9
//     runs here); the tensor core's own accumulation order and internal precision (the emulated
//     mma sums in float32 in k order; a GPU may differ in the last bits, within the TF32
//     tolerance the tests use); asynchronous-copy hazards (a cp.async read before its wait_group
//     sees the data here). Streams are opaque and ignored: launches run synchronously.
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
#include <numeric>
#include <random>
#include <source_location>
#include <stdexcept>
#include <string>
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
// Static shared memory is PYGAN_SHARED(type, name, dims) (common.cuh): a bare __shared__ is an error.
#define __shared__ __shared__is_not_emulated_use_PYGAN_SHARED
#define __launch_bounds__(...)
#define __align__(n) alignas(n)

// ---- types and built-in variables ----------------------------------------------------------
struct uint3 { unsigned x, y, z; };
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
namespace pygan_emu {
// A float2/float4 copied out of or into memory must be aligned to its size, as on the GPU (defined
// with the launch machinery below: it records the fault and stops the thread).
[[noreturn]] inline void misaligned_vector(const void* p, std::size_t size, const char* access);
inline void check_vector(const void* p, std::size_t size, const char* access) {
  if (reinterpret_cast<std::uintptr_t>(p) % size != 0) misaligned_vector(p, size, access);
}
}  // namespace pygan_emu
struct alignas(8) float2 {
  float x, y;
  float2() = default;
  constexpr float2(float x_, float y_) : x(x_), y(y_) {}
  float2(const float2& o) : x(o.x), y(o.y) { pygan_emu::check_vector(&o, 8, "load"); }
  float2& operator=(const float2& o) {
    pygan_emu::check_vector(this, 8, "store");
    pygan_emu::check_vector(&o, 8, "load");
    x = o.x, y = o.y;
    return *this;
  }
};
struct alignas(16) float4 {
  float x, y, z, w;
  float4() = default;
  constexpr float4(float x_, float y_, float z_, float w_) : x(x_), y(y_), z(z_), w(w_) {}
  float4(const float4& o) : x(o.x), y(o.y), z(o.z), w(o.w) { pygan_emu::check_vector(&o, 16, "load"); }
  float4& operator=(const float4& o) {
    pygan_emu::check_vector(this, 16, "store");
    pygan_emu::check_vector(&o, 16, "load");
    x = o.x, y = o.y, z = o.z, w = o.w;
    return *this;
  }
};
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
  cudaErrorNoDevice = 100, cudaErrorMisalignedAddress = 716, cudaErrorLaunchFailure = 719,
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
    case cudaErrorMisalignedAddress: return "misaligned address";
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

// ---- faults: the first one of a launch is kept, reported by cudaGetLastError() ---------------
struct Fault {};  // thrown to stop a faulting thread; caught by the launch
struct FaultState {
  std::mutex m;
  std::atomic<bool> raised{false};
  cudaError_t code = cudaSuccess;
  std::string detail;  // what happened, where; taken by take_error_detail()
};
inline FaultState& faults() { static FaultState f; return f; }
inline std::string where_am_i();  // "thread (x, y, z) of block (x, y, z)", defined below
inline void record_fault(cudaError_t code, const std::string& what) {
  FaultState& f = faults();
  std::lock_guard<std::mutex> lock(f.m);
  if (f.raised.load()) return;  // the first fault of the launch wins, as on a GPU
  f.code = code;
  f.detail = what;
  f.raised.store(true);
}
// The detail of the last fault (cleared): PYGAN_LAUNCH appends it to the error message.
inline std::string take_error_detail() {
  FaultState& f = faults();
  std::lock_guard<std::mutex> lock(f.m);
  std::string d;
  d.swap(f.detail);
  return d;
}
[[noreturn]] inline void misaligned_vector(const void* p, std::size_t size, const char* access) {
  char buf[160];
  std::snprintf(buf, sizeof buf, "misaligned float%d %s at address %p (not %zu-byte aligned)",
                static_cast<int>(size / 4), access, p, size);
  record_fault(cudaErrorMisalignedAddress, std::string(buf) + " by " + where_am_i());
  throw Fault{};
}

// ---- the block-order seed, the launch counter, the no-op switch -----------------------------
struct SeedState {
  std::mutex m;
  bool set = false;
  std::uint64_t seed = 0, launch = 0;  // launch: launches since the seed was set
};
inline SeedState& seed_state() { static SeedState s; return s; }
inline void set_seed(std::uint64_t seed) {
  SeedState& s = seed_state();
  std::lock_guard<std::mutex> lock(s.m);
  s.seed = seed, s.launch = 0, s.set = true;
}
inline std::uint64_t get_seed_locked(SeedState& s) {
  if (!s.set) {
    const char* env = std::getenv("PYGAN_EMU_SEED");
    if (env && *env) {
      s.seed = std::strtoull(env, nullptr, 0);
    } else {
      std::random_device rd;
      s.seed = (std::uint64_t{rd()} << 32 | rd()) % 1000000000ull;  // short enough to retype
    }
    s.set = true;
  }
  return s.seed;
}
inline std::uint64_t get_seed() {
  SeedState& s = seed_state();
  std::lock_guard<std::mutex> lock(s.m);
  return get_seed_locked(s);
}
// The seed of the next launch's block order: (seed, number of the launch since the seed was set).
inline std::uint64_t next_launch_seed() {
  SeedState& s = seed_state();
  std::lock_guard<std::mutex> lock(s.m);
  const std::uint64_t seed = get_seed_locked(s);
  return seed * 0x9E3779B97F4A7C15ull + ++s.launch;
}
inline std::atomic<std::uint64_t> launches{0};  // every launch (run or skipped), for tests
// The names (as written at the launch site) and grids of the last kRecentLaunches launches, oldest
// first, for tests that must see which kernel a launcher chose; guarded by launch_mutex().
constexpr std::size_t kRecentLaunches = 64;
inline std::vector<std::pair<std::string, unsigned>>& recent_launches() {
  static std::vector<std::pair<std::string, unsigned>> r;
  return r;
}
inline bool skip_launches() {
  const char* env = std::getenv("PYGAN_EMU_SKIP_LAUNCH");
  return env && *env && std::strcmp(env, "0") != 0;
}

// ---- static shared memory (PYGAN_SHARED) ------------------------------------------------------
// Blocks that may run at once (PYGAN_EMU_CONCURRENT_BLOCKS): every static shared-memory variable
// has one copy per slot, and each worker thread serves one slot.
constexpr int kMaxConcurrentBlocks = 2;
inline thread_local int block_slot = 0;
inline std::atomic<int> concurrent_override{0};  // 0: from the environment; set by the self-test
// 1 (blocks one at a time) or 2 (blocks in pairs), read at every launch.
inline int concurrent_blocks() {
  if (const int k = concurrent_override.load()) return k;
  const char* env = std::getenv("PYGAN_EMU_CONCURRENT_BLOCKS");
  const int k = env && *env ? std::atoi(env) : 1;
  return k >= kMaxConcurrentBlocks ? kMaxConcurrentBlocks : 1;
}

struct SharedRegistry {
  std::mutex m;
  std::vector<std::pair<unsigned char*, std::size_t>> vars;  // slot 0's address, bytes per slot
};
inline SharedRegistry& shared_registry() { static SharedRegistry r; return r; }
// Called once per variable, when a thread first reaches its declaration (a function-local static
// initialiser: the other threads wait for it): every slot poisoned now, and a slot at the start of
// every block that runs in it.
inline bool register_shared(void* p, std::size_t slot_bytes) {
  SharedRegistry& r = shared_registry();
  std::lock_guard<std::mutex> lock(r.m);
  std::memset(p, 0xFF, slot_bytes * kMaxConcurrentBlocks);
  r.vars.emplace_back(static_cast<unsigned char*>(p), slot_bytes);
  return true;
}
inline void poison_shared(int slot) {
  SharedRegistry& r = shared_registry();
  std::lock_guard<std::mutex> lock(r.m);
  for (auto& [p, bytes] : r.vars) std::memset(p + slot * bytes, 0xFF, bytes);
}

// ---- blocks and warps -----------------------------------------------------------------------------
struct Warp {
  explicit Warp(int lanes) : bar(lanes), live(lanes == 32 ? ~0u : (1u << lanes) - 1) {
    for (auto& s : slot) s = kPoison;
  }
  std::barrier<> bar;
  std::uint64_t slot[32];
  std::atomic<unsigned> live;
  std::uint32_t mma[32][10];  // mma.sync: each lane's a0..a3, b0, b1, c0..c3 (as bits)
};
struct Block {
  Block(int n, uint3 idx_) : idx(idx_), site(n, nullptr), line(n, 0), exited(n) {
    for (int w = 0; w * 32 < n; ++w) warps.push_back(std::make_unique<Warp>(std::min(32, n - 32 * w)));
  }
  uint3 idx;
  std::vector<std::unique_ptr<Warp>> warps;
  std::vector<const char*> site;           // per thread: the file of the __syncthreads() it waits at
  std::vector<unsigned> line;              // and its line
  std::vector<std::atomic<bool>> exited;   // per thread: returned (or faulted)
  bool diverged = false;                   // a divergent barrier was reported for this block
};
struct Round;
// Runs when every thread still running has arrived at a __syncthreads(): within each block they
// must all be at the same one.
struct BarrierCheck {
  Round* round;
  void operator()() noexcept;
};
// The blocks alive together (one, or two with PYGAN_EMU_CONCURRENT_BLOCKS=2). Their threads share
// ONE barrier: a __syncthreads() completes when every thread of every block of the round has
// arrived (each at its own block's barrier), so the blocks run in lockstep, phase by phase: what
// one block reads in a phase, the other may be overwriting in the same phase, and neither sees
// the other's next phase before its own barrier.
struct Round {
  Round(int n, const std::vector<uint3>& idx) : bar(static_cast<std::ptrdiff_t>(n * idx.size()), BarrierCheck{this}) {
    for (const uint3& i : idx) blocks.push_back(std::make_unique<Block>(n, i));
  }
  std::barrier<BarrierCheck> bar;
  std::vector<std::unique_ptr<Block>> blocks;
};
inline thread_local Round* current_round = nullptr;
inline thread_local Block* current_block = nullptr;
inline thread_local unsigned char* dynamic_smem = nullptr;  // PYGAN_DYNAMIC_SMEM points here (per slot)
inline thread_local int lane = 0, warp_id = 0, linear_tid = 0;

inline std::string where_am_i() {
  char buf[96];
  std::snprintf(buf, sizeof buf, "thread (%u, %u, %u) of block (%u, %u, %u)", threadIdx.x, threadIdx.y,
                threadIdx.z, blockIdx.x, blockIdx.y, blockIdx.z);
  return buf;
}

inline const char* short_path(const char* file) {  // from csrc/ on, when the path has one
  const char* c = std::strstr(file, "csrc/");
  return c ? c : file;
}

inline void BarrierCheck::operator()() noexcept {
  for (auto& blk : round->blocks) {
    Block& b = *blk;
    const int n = static_cast<int>(b.site.size());
    int first = -1;
    for (int t = 0; t < n; ++t) {
      if (b.exited[t].load()) continue;
      if (first < 0) { first = t; continue; }
      if (b.line[t] != b.line[first] || std::strcmp(b.site[t], b.site[first]) != 0) {
        if (b.diverged) break;
        b.diverged = true;
        char buf[512];
        std::snprintf(buf, sizeof buf,
                      "divergent __syncthreads(): in block (%u, %u, %u), thread %d waits at %s:%u while thread %d "
                      "waits at %s:%u (every thread of a block must reach the same barrier)",
                      b.idx.x, b.idx.y, b.idx.z, first, short_path(b.site[first]), b.line[first], t,
                      short_path(b.site[t]), b.line[t]);
        try {
          record_fault(cudaErrorLaunchFailure, buf);
        } catch (...) {
        }
        break;
      }
    }
  }
}

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

// `name` is the kernel as written at the launch site (PYGAN_LAUNCH passes it; for messages and
// recent_launches).
template <class... KArgs, class... Args>
void launch(const char* name, void (*kernel)(KArgs...), dim3 grid, dim3 block, std::size_t smem, cudaStream_t,
            Args&&... args) {
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
  launches.fetch_add(1);
  {
    auto& recent = recent_launches();
    if (recent.size() == kRecentLaunches) recent.erase(recent.begin());
    recent.emplace_back(name, grid.x * grid.y * grid.z);
  }
  if (skip_launches()) return;  // PYGAN_EMU_SKIP_LAUNCH: the no-op "kernel" the fooling test needs
  {
    FaultState& f = faults();
    std::lock_guard<std::mutex> flock(f.m);
    f.raised.store(false), f.code = cudaSuccess, f.detail.clear();
  }
  // The blocks in a shuffled order (see the header comment).
  const std::uint64_t nblocks = 1ull * grid.x * grid.y * grid.z;
  std::vector<std::uint64_t> order(nblocks);
  std::iota(order.begin(), order.end(), std::uint64_t{0});
  std::mt19937_64 gen(next_launch_seed());
  for (std::uint64_t i = nblocks; i > 1; --i) std::swap(order[i - 1], order[gen() % i]);

  struct alignas(16) Chunk { unsigned char b[16]; };
  // Blocks alive at once: their threads are workers of slot 0 and slot 1, each slot with its own
  // copy of shared memory (static and dynamic).
  const int slots = static_cast<int>(std::min<std::uint64_t>(concurrent_blocks(), nblocks));
  std::vector<std::vector<Chunk>> smem_bufs(slots, std::vector<Chunk>((smem + 15) / 16));
  const int n = static_cast<int>(nthreads);
  std::barrier<> gate(slots * n + 1);  // main thread + workers: start of a round, end of a round
  std::unique_ptr<Round> round;
  bool done = false;
  std::vector<std::thread> workers;
  workers.reserve(slots * n);
  for (int slot = 0; slot < slots; ++slot) {
    for (int t = 0; t < n; ++t) {
      workers.emplace_back([&, slot, t] {
        threadIdx = uint3{t % block.x, t / block.x % block.y, t / (block.x * block.y)};
        blockDim = block;
        gridDim = grid;
        lane = t % 32;
        warp_id = t / 32;
        linear_tid = t;
        block_slot = slot;
        dynamic_smem = smem ? smem_bufs[slot][0].b : nullptr;
        for (;;) {
          gate.arrive_and_wait();
          if (done) return;
          if (slot < static_cast<int>(round->blocks.size())) {  // this slot has a block this round
            current_round = round.get();
            current_block = round->blocks[slot].get();
            blockIdx = current_block->idx;
            try {
              std::apply(kernel, params);
            } catch (const Fault&) {  // recorded already; this thread stops here
            } catch (const std::exception& e) {
              record_fault(cudaErrorLaunchFailure, std::string("exception in the kernel: ") + e.what() + " (" + where_am_i() + ")");
            } catch (...) {
              record_fault(cudaErrorLaunchFailure, "exception in the kernel (" + where_am_i() + ")");
            }
            Warp& w = my_warp();  // this thread has returned: poison its lane, leave the barriers
            w.slot[lane] = kPoison;
            w.live.fetch_and(~(1u << lane));
            current_block->exited[t].store(true);
            w.bar.arrive_and_drop();
            current_round->bar.arrive_and_drop();
            current_block = nullptr;
            current_round = nullptr;
          }
          gate.arrive_and_wait();
        }
      });
    }
  }
  for (std::uint64_t i = 0; i < nblocks; i += slots) {
    if (faults().raised.load()) break;  // a fault ends the launch: the other blocks never start
    std::vector<uint3> idx;
    for (std::uint64_t k = i; k < nblocks && k < i + slots; ++k) {
      const std::uint64_t b = order[k];
      idx.push_back(uint3{static_cast<unsigned>(b % grid.x), static_cast<unsigned>(b / grid.x % grid.y),
                          static_cast<unsigned>(b / (1ull * grid.x * grid.y))});
      const int slot = static_cast<int>(k - i);
      if (smem) std::memset(smem_bufs[slot].data(), 0xFF, smem_bufs[slot].size() * sizeof(Chunk));
      poison_shared(slot);
    }
    round = std::make_unique<Round>(n, idx);
    gate.arrive_and_wait();  // run the round's blocks
    gate.arrive_and_wait();  // every thread has returned
  }
  done = true;
  gate.arrive_and_wait();
  for (auto& w : workers) w.join();
  if (faults().raised.load()) last_error = faults().code;
}
}  // namespace pygan_emu

// ---- block and warp intrinsics -----------------------------------------------------------------
// The caller's source line identifies the barrier: every thread of the block must wait at the same one.
inline void __syncthreads(std::source_location at = std::source_location::current()) {
  pygan_emu::Block& b = *pygan_emu::current_block;
  b.site[pygan_emu::linear_tid] = at.file_name();
  b.line[pygan_emu::linear_tid] = at.line();
  pygan_emu::current_round->bar.arrive_and_wait();
}
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


// ---- PTX instructions with documented per-lane semantics (csrc/ptx.cuh wraps them) ---------------
namespace pygan_emu {
// cvt.rna.tf32.f32: round to nearest, ties away from zero, keeping 10 mantissa bits (the low 13
// bits of the result are zero). Adding half an ulp of TF32 to the magnitude bits and truncating
// rounds ties away; a carry into the exponent is right (the largest finite values round to
// infinity, as RNA does). NaN stays NaN (canonical quiet NaN), infinities stay infinities.
inline std::uint32_t cvt_rna_tf32(float x) {
  std::uint32_t bits;
  std::memcpy(&bits, &x, 4);
  if ((bits & 0x7f800000u) == 0x7f800000u) return (bits & 0x007fffffu) ? 0x7fffffffu : bits;
  return (bits + 0x1000u) & ~0x1fffu;
}
inline float tf32_value(std::uint32_t bits) {  // the float an (already TF32) .b32 register holds
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 d, a, b, c, as the PTX ISA lays it out, with
// groupID = lane >> 2, t = lane % 4:
//   A (16x8, row): a0 (g, t), a1 (g + 8, t), a2 (g, t + 4), a3 (g + 8, t + 4)
//   B (8x8, col):  b0 (t, g), b1 (t + 4, g)
//   C, D (16x8):   c0 (g, 2t), c1 (g, 2t + 1), c2 (g + 8, 2t), c3 (g + 8, 2t + 1)
// Operands are rounded to TF32 here too (idempotent on values that went through cvt.rna; PTX leaves
// un-converted .tf32 operands to the implementation). d may alias c.
inline void mma_m16n8k8_tf32(float (&d)[4], const std::uint32_t (&a)[4], const std::uint32_t (&b)[2],
                             const float (&c)[4]) {
  Warp& w = my_warp();
  const auto missing = [&](const char* when) {
    const unsigned live = w.live.load();
    if (live == ~0u) return;
    char buf[256];
    std::snprintf(buf, sizeof buf, "mma.sync.aligned.m16n8k8 %s with live lanes 0x%08x in warp %d of block (%u, %u, %u): "
                  "all 32 lanes must execute it (a warp-collective instruction)", when, live, warp_id, blockIdx.x,
                  blockIdx.y, blockIdx.z);
    record_fault(cudaErrorLaunchFailure, buf);
    throw Fault{};
  };
  missing("entered");
  std::uint32_t* mine = w.mma[lane];
  for (int i = 0; i < 4; ++i) mine[i] = a[i];
  for (int i = 0; i < 2; ++i) mine[4 + i] = b[i];
  for (int i = 0; i < 4; ++i) std::memcpy(&mine[6 + i], &c[i], 4);
  w.bar.arrive_and_wait();
  missing("completed");  // a lane that returned while the others waited: its registers are gone
  const auto A = [&](int row, int col) {  // the lane and register holding A(row, col)
    const int l = (row % 8) * 4 + col % 4, r = (row >= 8 ? 1 : 0) + (col >= 4 ? 2 : 0);
    return tf32_value(cvt_rna_tf32(tf32_value(w.mma[l][r])));
  };
  const auto B = [&](int row, int col) {
    const int l = col * 4 + row % 4, r = row >= 4 ? 1 : 0;
    return tf32_value(cvt_rna_tf32(tf32_value(w.mma[l][4 + r])));
  };
  const int g = lane >> 2, t = lane & 3;
  float out[4];
  for (int i = 0; i < 4; ++i) {
    const int row = g + (i >= 2 ? 8 : 0), col = 2 * t + (i & 1);
    float acc = tf32_value(w.mma[lane][6 + i]);
    for (int k = 0; k < 8; ++k) acc += A(row, k) * B(k, col);
    out[i] = acc;
  }
  w.bar.arrive_and_wait();  // nobody overwrites the buffer while another lane still reads it
  for (int i = 0; i < 4; ++i) d[i] = out[i];
}

// cp.async.{ca,cg}.shared.global [dst], [src], cp_size, src_size: copy src_size bytes, zero-fill
// the rest of cp_size. Here at once (a legal schedule: the data is there before any wait_group).
// Both addresses must be aligned to cp_size, as PTX requires.
inline void cp_async(void* dst, const void* src, int cp_size, int src_size) {
  if (reinterpret_cast<std::uintptr_t>(dst) % cp_size || (src_size > 0 && reinterpret_cast<std::uintptr_t>(src) % cp_size)) {
    char buf[160];
    std::snprintf(buf, sizeof buf, "misaligned cp.async of %d bytes (shared %p, global %p)", cp_size, dst, src);
    record_fault(cudaErrorMisalignedAddress, std::string(buf) + " by " + where_am_i());
    throw Fault{};
  }
  if (src_size > 0) std::memcpy(dst, src, src_size);
  if (src_size < cp_size) std::memset(static_cast<char*>(dst) + src_size, 0, cp_size - src_size);
}
}  // namespace pygan_emu
