// Self-test of the host emulation (cuda_emu.h + common.cuh), compiled into pygan._emu only and
// run by tests/test_emulated_kernels.py through _emu._emulation_selftest(): each case launches a
// tiny kernel through PYGAN_LAUNCH and compares with what CUDA specifies. Also here: the emulation
// module's test hooks (block-order seed, launch count, kernels that fault on purpose), bound in
// bindings.cpp and used by tests/test_emulator_faults.py.
#ifndef PYGAN_EMULATION
#error "selftest.cpp is for the emulation module only"
#endif
#include <algorithm>
#include <limits>
#include <random>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "../common.cuh"
#include "../ptx.cuh"

namespace {

__global__ void shuffles(int* out) {  // 32 threads; 6 results per lane
  const int lane = threadIdx.x;
  out[lane * 6 + 0] = __shfl_down_sync(0xffffffffu, lane, 5);
  out[lane * 6 + 1] = __shfl_xor_sync(0xffffffffu, lane, 9, 16);
  out[lane * 6 + 2] = __shfl_sync(0xffffffffu, lane, 3, 8);
  out[lane * 6 + 3] = __shfl_up_sync(0xffffffffu, lane, 2);
  out[lane * 6 + 4] = static_cast<int>(__ballot_sync(0xffffffffu, lane % 3 == 0));
  out[lane * 6 + 5] = __any_sync(0xffffffffu, lane == 7) * 2 + __all_sync(0xffffffffu, lane < 31);
}

__global__ void block_sums(const float* x, float* out) {  // one sum per block
  const float s = pygan::block_reduce_sum(x[blockIdx.x * blockDim.x + threadIdx.x]);
  if (threadIdx.x == 0) out[blockIdx.x] = s;
}

__global__ void early_exit(float* out) {  // threads >= 50 leave before the barriers
  PYGAN_SHARED(float, buf, [64]);
  if (threadIdx.x >= 50) return;
  buf[threadIdx.x] = static_cast<float>(threadIdx.x);
  __syncthreads();
  out[threadIdx.x] = buf[49 - threadIdx.x];
  __syncthreads();
}

__global__ void indices(int* out) {  // 2-D blocks in a 2-D grid
  const int linear = threadIdx.x + threadIdx.y * blockDim.x;
  const int block = blockIdx.x + blockIdx.y * gridDim.x;
  out[block * blockDim.x * blockDim.y + linear] = threadIdx.x * 1000 + threadIdx.y * 100 + blockIdx.x * 10 + blockIdx.y;
}

__global__ void smem_poison(float* out) {
  PYGAN_DYNAMIC_SMEM(float, s);
  out[blockIdx.x * blockDim.x + threadIdx.x] = s[threadIdx.x];  // read before any write: poison (NaN)
  __syncthreads();
  s[threadIdx.x] = 1.0f;
}

__global__ void static_smem_poison(float* out) {  // every block reads its static shared memory first
  PYGAN_SHARED(float, s, [32]);
  PYGAN_SHARED(int, k, );
  out[blockIdx.x * blockDim.x + threadIdx.x] = threadIdx.x == 0 ? (k == -1 ? 0.0f : 1.0f) : s[threadIdx.x];
  __syncthreads();
  s[threadIdx.x] = 1.0f;
  if (threadIdx.x == 0) k = 7;
}

__global__ void block_order(int* ticket, int* out) {  // the order the blocks ran in
  if (threadIdx.x == 0) out[blockIdx.x] = atomicAdd(ticket, 1);
}

__global__ void misaligned_load(const float* p, float* out) {  // p + 1: not 16-byte aligned
  const float4 v = reinterpret_cast<const float4*>(p + 1)[threadIdx.x];
  out[threadIdx.x] = v.x;
}

__global__ void misaligned_store(float* out) {  // a float2 store at a 4-byte offset
  reinterpret_cast<float2*>(out + 1)[threadIdx.x] = make_float2(1.0f, 2.0f);
}

__global__ void aligned_vectors(const float* p, float* out) {  // the aligned case still works
  const float4 v = reinterpret_cast<const float4*>(p)[threadIdx.x];
  reinterpret_cast<float2*>(out)[2 * threadIdx.x] = make_float2(v.x, v.y);
  reinterpret_cast<float2*>(out)[2 * threadIdx.x + 1] = make_float2(v.z, v.w);
}

__global__ void divergent_barrier(float* out) {  // the two halves wait at different barriers
  if (threadIdx.x < 16) {
    out[threadIdx.x] = 1.0f;
    __syncthreads();
  } else {
    out[threadIdx.x] = 2.0f;
    __syncthreads();
  }
}

__global__ void atomics(float* sum, int* mx) {
  atomicAdd(sum, 1.0f);
  atomicMax(mx, static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x));
}

__global__ void partial_warp(float* out) {  // 40 threads: the second warp has 8 lanes
  out[threadIdx.x] = __shfl_down_sync(0xffffffffu, 1.0f, 4);
}

// One mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 over row-major A (16x8), B (8x8, k by n),
// C (16x8) into D (16x8), 32 threads. The fragments are placed here by the PTX ISA's own formulas
// ("Matrix Fragments for mma.m16n8k8", .tf32), written independently of the emulator's gather, so
// a wrong layout in either shows as a wrong D.
__global__ void mma_tf32_tile(const float* A, const float* B, const float* C, float* D) {
  const int lane = threadIdx.x, g = lane >> 2, t = lane % 4;
  const std::uint32_t a[4] = {pygan::tf32_round(A[g * 8 + t]), pygan::tf32_round(A[(g + 8) * 8 + t]),
                              pygan::tf32_round(A[g * 8 + t + 4]), pygan::tf32_round(A[(g + 8) * 8 + t + 4])};
  const std::uint32_t b[2] = {pygan::tf32_round(B[t * 8 + g]), pygan::tf32_round(B[(t + 4) * 8 + g])};
  float d[4] = {C[g * 8 + 2 * t], C[g * 8 + 2 * t + 1], C[(g + 8) * 8 + 2 * t], C[(g + 8) * 8 + 2 * t + 1]};
  pygan::mma_m16n8k8_tf32(d, a, b);
  D[g * 8 + 2 * t] = d[0];
  D[g * 8 + 2 * t + 1] = d[1];
  D[(g + 8) * 8 + 2 * t] = d[2];
  D[(g + 8) * 8 + 2 * t + 1] = d[3];
}

__global__ void tf32_rounding(const float* in, float* out) {
  out[threadIdx.x] = __uint_as_float(pygan::tf32_round(in[threadIdx.x]));
}

__global__ void mma_missing_lane(float* out) {  // lane 31 returns before the warp-collective mma
  if (threadIdx.x == 31) return;
  const std::uint32_t a[4] = {0, 0, 0, 0}, b[2] = {0, 0};
  float d[4] = {0, 0, 0, 0};
  pygan::mma_m16n8k8_tf32(d, a, b);
  out[threadIdx.x] = d[0];
}

__global__ void mma_partial_warp(float* out) {  // 40 threads: warp 1 has 8 lanes
  const std::uint32_t a[4] = {0, 0, 0, 0}, b[2] = {0, 0};
  float d[4] = {0, 0, 0, 0};
  pygan::mma_m16n8k8_tf32(d, a, b);
  out[threadIdx.x] = d[0];
}

__global__ void cp_async_copies(const float* src, float* out) {  // 32 threads: copy, zero-fill, wait
  PYGAN_SHARED(float, buf, [32]);
  pygan::cp_async_f32(&buf[threadIdx.x], src + threadIdx.x, threadIdx.x % 3 != 0);
  pygan::cp_async_commit();
  pygan::cp_async_wait<0>();
  __syncthreads();
  out[threadIdx.x] = buf[31 - threadIdx.x];
}

// Deliberately racy across blocks: "the last block to finish sums every block's partial", with the
// finished-block counter read and written back non-atomically (a GPU needs atomicAdd plus a
// __threadfence). Right whenever blocks run one at a time, in any order; with two blocks alive at
// once both read the same count, so no block sees itself last and *out is never written.
__global__ void racy_last_block(float* partial, int* finished, float* out) {
  PYGAN_SHARED(int, ticket, );
  if (threadIdx.x == 0) {
    partial[blockIdx.x] = static_cast<float>(blockIdx.x + 1);
    ticket = *finished;  // read ...
  }
  __syncthreads();
  if (threadIdx.x == 0) *finished = ticket + 1;  // ... and write back: a lost update when blocks overlap
  __syncthreads();
  if (threadIdx.x == 0 && ticket == static_cast<int>(gridDim.x) - 1) {
    float sum = 0.0f;
    for (unsigned b = 0; b < gridDim.x; ++b) sum += partial[b];
    *out = sum;
  }
}

// How many blocks are alive at once: each block counts itself in, and after a barrier reads the count.
__global__ void blocks_alive(int* alive, int* seen) {
  if (threadIdx.x == 0) atomicAdd(alive, 1);
  __syncthreads();
  if (threadIdx.x == 0) atomicMax(seen, *alive);
  __syncthreads();
  if (threadIdx.x == 0) atomicSub(alive, 1);
}

// Static shared memory is per block even with two blocks alive: each block fills its copy with its
// own index, and reads it back after the other block (in lockstep) has written its copy.
__global__ void shared_per_block(int* out) {
  PYGAN_SHARED(int, mine, [32]);
  mine[threadIdx.x] = static_cast<int>(blockIdx.x);
  __syncthreads();
  out[blockIdx.x * blockDim.x + threadIdx.x] = mine[(threadIdx.x + 1) % blockDim.x];
}

// The index helpers of common.cuh within a tile of 2^31 (issue 13), computed in a kernel: the
// values conv2d's tiled GEMMs form for their grid, tile origins, split-K slices and K-tile loops.
constexpr int kIntMax = 2147483647;
__global__ void index_edges(std::int64_t* out) {
  out[0] = pygan::ceil_div<int>(kIntMax - 100, 128);  // a + b - 1 wraps: the old formula gave < 0
  out[1] = pygan::ceil_div<int>(kIntMax, 16);
  out[2] = pygan::ceil_div<int>(kIntMax - 1, 1);
  out[3] = pygan::ceil_div<std::int64_t>(INT64_MAX - 3, std::int64_t(1) << 20);
  out[4] = pygan::ceil_div<int>(0, 64) * 10 + pygan::ceil_div<int>(64, 64) * 100 + pygan::ceil_div<int>(65, 64);
  // the last 16-wide tile of N = 2^31 - 2 columns: origin and last offset pass INT_MAX
  const unsigned last_block = static_cast<unsigned>(pygan::ceil_div<int>(kIntMax - 1, 16)) - 1;
  out[5] = pygan::tile_pos(last_block, 16, 15);
  // split-K over K = 2^31 - 2 in chunks of 2^31 - 16: slice 1 ends at K, not at the wrapped 2 * chunk
  out[6] = pygan::slice_end(0, kIntMax - 15, kIntMax - 1);
  out[7] = pygan::slice_end(1, kIntMax - 15, kIntMax - 1);
  // gemm_tiled's K loop over the slice [2^31 - 40, 2^31 - 2) in steps of 16: k0 += 16 passes INT_MAX
  std::int64_t tiles = 0, last = -1;
  for (std::int64_t k0 = kIntMax - 40; k0 < pygan::slice_end(0, kIntMax, kIntMax - 1) && tiles < 100; k0 += 16) {
    ++tiles;
    last = k0;
  }
  out[8] = tiles;
  out[9] = last;
}

}  // namespace

std::vector<std::pair<std::string, bool>> pygan_emulation_selftest() {
  std::vector<std::pair<std::string, bool>> r;
  cudaStream_t s = nullptr;
  {
    std::vector<int> o(32 * 6);
    PYGAN_LAUNCH(shuffles, 1, 32, 0, s, o.data());
    bool down = true, xr = true, bc = true, up = true, vote = true;
    for (int l = 0; l < 32; ++l) {
      down &= o[l * 6] == (l + 5 < 32 ? l + 5 : l);
      const int x = l ^ 9;
      xr &= o[l * 6 + 1] == (x / 16 > l / 16 ? l : x);
      bc &= o[l * 6 + 2] == (l / 8) * 8 + 3;
      up &= o[l * 6 + 3] == (l >= 2 ? l - 2 : l);
      vote &= static_cast<unsigned>(o[l * 6 + 4]) == 0x49249249u && o[l * 6 + 5] == 2;
    }
    r.push_back({"shfl_down", down});
    r.push_back({"shfl_xor width 16", xr});
    r.push_back({"shfl broadcast width 8", bc});
    r.push_back({"shfl_up", up});
    r.push_back({"ballot/any/all", vote});
  }
  {
    const int blocks = 3, threads = 96;
    std::vector<float> x(blocks * threads), o(blocks);
    for (int i = 0; i < blocks * threads; ++i) x[i] = static_cast<float>(i % 7);
    PYGAN_LAUNCH(block_sums, blocks, threads, 0, s, x.data(), o.data());
    bool ok = true;
    for (int b = 0; b < blocks; ++b) {
      float want = 0;
      for (int i = 0; i < threads; ++i) want += x[b * threads + i];
      ok &= o[b] == want;
    }
    r.push_back({"block_reduce_sum", ok});
  }
  {
    std::vector<float> o(64, -1.0f);
    PYGAN_LAUNCH(early_exit, 2, 64, 0, s, o.data());
    bool ok = true;
    for (int i = 0; i < 64; ++i) ok &= o[i] == (i < 50 ? static_cast<float>(49 - i) : -1.0f);
    r.push_back({"early return leaves the barriers", ok});
  }
  {
    std::vector<int> o(2 * 3 * 4 * 5);
    PYGAN_LAUNCH(indices, dim3(2, 3), dim3(4, 5), 0, s, o.data());
    bool ok = true;
    for (int by = 0; by < 3; ++by)
      for (int bx = 0; bx < 2; ++bx)
        for (int ty = 0; ty < 5; ++ty)
          for (int tx = 0; tx < 4; ++tx)
            ok &= o[(bx + by * 2) * 20 + tx + ty * 4] == tx * 1000 + ty * 100 + bx * 10 + by;
    r.push_back({"2-D thread and block indices", ok});
  }
  {
    std::vector<float> o(64);
    PYGAN_LAUNCH(smem_poison, 2, 32, 32 * sizeof(float), s, o.data());
    bool ok = true;
    for (float v : o) ok &= std::isnan(v);
    r.push_back({"dynamic shared memory poisoned per block", ok});
  }
  {
    std::vector<float> o(3 * 32);
    PYGAN_LAUNCH(static_smem_poison, 3, 32, 0, s, o.data());
    bool ok = true;  // every block, not only the first: poisoned at each block start
    for (int i = 0; i < 3 * 32; ++i) ok &= i % 32 == 0 ? o[i] == 0.0f : std::isnan(o[i]);
    r.push_back({"static shared memory poisoned per block", ok});
  }
  {
    const int blocks = 64;
    std::vector<int> first(blocks), again(blocks);
    int ticket = 0;
    const std::uint64_t seed = pygan_emu::get_seed();
    const int concurrent = pygan_emu::concurrent_override.exchange(1);  // the order of single blocks
    pygan_emu::set_seed(12345);
    PYGAN_LAUNCH(block_order, blocks, 32, 0, s, &ticket, first.data());
    ticket = 0;
    pygan_emu::set_seed(12345);
    PYGAN_LAUNCH(block_order, blocks, 32, 0, s, &ticket, again.data());
    pygan_emu::set_seed(seed);
    pygan_emu::concurrent_override.store(concurrent);
    std::vector<int> sorted(first);
    std::sort(sorted.begin(), sorted.end());
    bool perm = true, identity = true;
    for (int b = 0; b < blocks; ++b) perm &= sorted[b] == b, identity &= first[b] == b;
    r.push_back({"blocks run in a shuffled order", perm && !identity});
    r.push_back({"the same seed gives the same order", first == again});
  }
  {
    const auto fault = [&](auto launch, const char* expect) {
      try {
        launch();
      } catch (const std::runtime_error& e) {
        return std::string(e.what()).find(expect) != std::string::npos;
      }
      return false;
    };
    alignas(16) float in[64 + 4] = {};
    float out[64 + 4] = {};
    r.push_back({"misaligned float4 load faults", fault([&] { PYGAN_LAUNCH(misaligned_load, 1, 8, 0, s, in, out); },
                                                        "misaligned float4 load")});
    r.push_back({"misaligned float2 store faults",
                 fault([&] { PYGAN_LAUNCH(misaligned_store, 1, 8, 0, s, reinterpret_cast<float*>(in)); },
                       "misaligned float2 store")});
    for (int i = 0; i < 32; ++i) in[i] = static_cast<float>(i);
    PYGAN_LAUNCH(aligned_vectors, 1, 8, 0, s, in, out);
    bool ok = true;
    for (int i = 0; i < 32; ++i) ok &= out[i] == static_cast<float>(i);
    r.push_back({"aligned float4 loads and float2 stores", ok});
    r.push_back({"divergent __syncthreads faults",
                 fault([&] { PYGAN_LAUNCH(divergent_barrier, 1, 32, 0, s, out); }, "divergent __syncthreads()")});
    r.push_back({"mma.sync with a returned lane faults",
                 fault([&] { PYGAN_LAUNCH(mma_missing_lane, 1, 32, 0, s, out); }, "all 32 lanes must execute it")});
    r.push_back({"mma.sync in a partial warp faults",
                 fault([&] { PYGAN_LAUNCH(mma_partial_warp, 1, 40, 0, s, out); }, "all 32 lanes must execute it")});
  }
  {
    float sum = 0;
    int mx = -1;
    PYGAN_LAUNCH(atomics, 4, 64, 0, s, &sum, &mx);
    r.push_back({"atomicAdd/atomicMax", sum == 256.0f && mx == 255});
  }
  {
    std::vector<float> o(40);
    PYGAN_LAUNCH(partial_warp, 1, 40, 0, s, o.data());
    bool ok = true;  // warp 1 has lanes 0-7: lanes 4-7 read lanes 8-11, which do not exist -> poison
    for (int i = 0; i < 40; ++i) ok &= i < 36 ? o[i] == 1.0f : std::isnan(o[i]);
    r.push_back({"partial warp", ok});
  }
  {
    const auto launch_fails = [&](dim3 grid, dim3 block, std::size_t smem) {
      try {
        PYGAN_LAUNCH(atomics, grid, block, smem, s, nullptr, nullptr);
      } catch (const std::runtime_error&) {
        return true;
      }
      return false;
    };
    r.push_back({"empty grid is a launch error", launch_fails(dim3(0), dim3(32), 0)});
    r.push_back({"1025 threads is a launch error", launch_fails(dim3(1), dim3(1025), 0)});
    r.push_back({"64 KB dynamic smem is a launch error", launch_fails(dim3(1), dim3(32), 64 * 1024)});
  }
  {
    // cvt.rna.tf32.f32: ties away from zero (1 + 2^-11 is halfway: RNE would give 1), below half
    // rounds down, carries into the exponent, the largest float overflows to infinity, NaN/inf kept.
    const float h = std::ldexp(1.0f, -11);
    std::vector<float> in = {1.0f + h, -(1.0f + h), 1.0f + h - std::ldexp(1.0f, -23), 2.0f - h, std::numeric_limits<float>::max(),
                             INFINITY, NAN, 0.0f};
    std::vector<float> want = {1.0f + 2 * h, -(1.0f + 2 * h), 1.0f, 2.0f, INFINITY, INFINITY, NAN, 0.0f};
    std::vector<float> o(in.size(), -1.0f);
    PYGAN_LAUNCH(tf32_rounding, 1, static_cast<unsigned>(in.size()), 0, s, in.data(), o.data());
    bool ok = true;
    for (std::size_t i = 0; i < in.size(); ++i) ok &= std::isnan(want[i]) ? std::isnan(o[i]) : o[i] == want[i];
    r.push_back({"cvt.rna.tf32.f32 rounds to nearest, ties away", ok});
  }
  {
    // mma.sync m16n8k8 tf32, layout: distinct small integers in A, B and C make D exact, and any
    // transposed or swapped fragment register changes it.
    std::vector<float> A(128), B(64), C(128), D(128, NAN);
    for (int m = 0; m < 16; ++m)
      for (int k = 0; k < 8; ++k) A[m * 8 + k] = static_cast<float>(1 + m + 16 * k);
    for (int k = 0; k < 8; ++k)
      for (int n = 0; n < 8; ++n) B[k * 8 + n] = static_cast<float>(1 + k + 8 * n);
    for (int m = 0; m < 16; ++m)
      for (int n = 0; n < 8; ++n) C[m * 8 + n] = static_cast<float>(1000 * m + n);
    PYGAN_LAUNCH(mma_tf32_tile, 1, 32, 0, s, A.data(), B.data(), C.data(), D.data());
    bool ok = true;
    for (int m = 0; m < 16; ++m)
      for (int n = 0; n < 8; ++n) {
        double want = C[m * 8 + n];
        for (int k = 0; k < 8; ++k) want += double(A[m * 8 + k]) * B[k * 8 + n];
        ok &= D[m * 8 + n] == want;
      }
    r.push_back({"mma.sync m16n8k8 tf32: fragment layout (exact integer product)", ok});
    // random operands: D against a float64 product of the TF32-rounded A and B, within float32
    // accumulation error (9 terms: 2^-24 * 9 * sum |terms|, doubled for margin)
    std::mt19937 gen(1234);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    const auto tf32 = [](float x) { return pygan_emu::tf32_value(pygan_emu::cvt_rna_tf32(x)); };
    bool close = true, rounded = true;
    for (int trial = 0; trial < 4; ++trial) {
      for (float& v : A) v = nd(gen);
      for (float& v : B) v = nd(gen);
      for (float& v : C) v = nd(gen);
      PYGAN_LAUNCH(mma_tf32_tile, 1, 32, 0, s, A.data(), B.data(), C.data(), D.data());
      double worst_vs_fp32 = 0.0;
      for (int m = 0; m < 16; ++m)
        for (int n = 0; n < 8; ++n) {
          double want = C[m * 8 + n], mag = std::fabs(want), exact = C[m * 8 + n];
          for (int k = 0; k < 8; ++k) {
            const double p = double(tf32(A[m * 8 + k])) * tf32(B[k * 8 + n]);
            want += p, mag += std::fabs(p);
            exact += double(A[m * 8 + k]) * B[k * 8 + n];
          }
          close &= std::fabs(D[m * 8 + n] - want) <= 2.0 * 9.0 * std::ldexp(1.0, -24) * mag;
          worst_vs_fp32 = std::max(worst_vs_fp32, std::fabs(D[m * 8 + n] - exact) / mag);
        }
      rounded &= worst_vs_fp32 > 1e-6;  // the inputs really were rounded to TF32 (not fp32 math)
    }
    r.push_back({"mma.sync m16n8k8 tf32: random operands match float64 of TF32-rounded inputs", close});
    r.push_back({"mma.sync m16n8k8 tf32: operands are rounded to TF32", rounded});
  }
  {
    alignas(16) float src[32], o[32];
    for (int i = 0; i < 32; ++i) src[i] = static_cast<float>(i + 1), o[i] = -1.0f;
    PYGAN_LAUNCH(cp_async_copies, 1, 32, 0, s, src, o);
    bool ok = true;
    for (int i = 0; i < 32; ++i) ok &= o[i] == ((31 - i) % 3 != 0 ? static_cast<float>(32 - i) : 0.0f);
    r.push_back({"cp.async copies and zero-fills", ok});
  }
  {
    std::vector<std::int64_t> o(10, -7);
    PYGAN_LAUNCH(index_edges, 1, 1, 0, s, o.data());
    const std::int64_t want[10] = {16777216, 134217728, kIntMax - 1, (INT64_MAX >> 20) + 1, 102,
                                   std::int64_t(kIntMax),  // the last column, 2^31 - 1 (>= N: masked)
                                   kIntMax - 15, kIntMax - 1, 3, std::int64_t(kIntMax) - 8};
    const char* names[10] = {"ceil_div(2^31 - 101, 128) does not wrap", "ceil_div(2^31 - 1, 16)",
                             "ceil_div(2^31 - 2, 1)", "ceil_div(2^63 - 4, 2^20) in 64 bits",
                             "ceil_div(0 / 64 / 65, 64)", "tile_pos: the last tile's last column passes INT_MAX",
                             "slice_end of split 0 near 2^31", "slice_end of split 1 clamps to K near 2^31",
                             "K loop near 2^31 runs 3 tiles", "K loop near 2^31: the last tile starts at 2^31 - 9"};
    for (int i = 0; i < 10; ++i) r.push_back({std::string("index edges: ") + names[i], o[i] == want[i]});
  }
  {
    // PYGAN_EMU_CONCURRENT_BLOCKS: the racy kernel passes with one block at a time, fails with two
    const int before = pygan_emu::concurrent_override.load();
    const auto racy = [&](int concurrent) {
      pygan_emu::concurrent_override.store(concurrent);
      const unsigned blocks = 8;
      std::vector<float> partial(blocks, 0.0f);
      int finished = 0;
      float out = std::nanf("");
      PYGAN_LAUNCH(racy_last_block, blocks, 32, 0, s, partial.data(), &finished, &out);
      return out == 36.0f;  // 1 + 2 + ... + 8
    };
    const auto alive = [&](int concurrent) {
      pygan_emu::concurrent_override.store(concurrent);
      int count = 0, seen = 0;
      PYGAN_LAUNCH(blocks_alive, 6, 64, 0, s, &count, &seen);
      return seen;
    };
    const auto per_block = [&](int concurrent) {
      pygan_emu::concurrent_override.store(concurrent);
      std::vector<int> o(5 * 32, -1);
      PYGAN_LAUNCH(shared_per_block, 5, 32, 0, s, o.data());
      bool ok = true;
      for (int i = 0; i < 5 * 32; ++i) ok &= o[i] == i / 32;
      return ok;
    };
    r.push_back({"one block at a time: the racy last-block kernel passes", racy(1)});
    r.push_back({"two blocks at once: the racy last-block kernel is caught", !racy(2)});
    r.push_back({"one block alive at a time when asked", alive(1) == 1});
    r.push_back({"two blocks alive at once when asked", alive(2) == 2});
    r.push_back({"static shared memory is per block with two blocks alive", per_block(2) && per_block(1)});
    pygan_emu::concurrent_override.store(before);
  }
  return r;
}

// ---- test hooks of the emulation module (bound in bindings.cpp as _emulation_*) -----------------
std::uint64_t pygan_emulation_seed() { return pygan_emu::get_seed(); }
void pygan_emulation_set_seed(std::uint64_t seed) { pygan_emu::set_seed(seed); }
std::uint64_t pygan_emulation_launches() { return pygan_emu::launches.load(); }
int pygan_emulation_concurrent_blocks() { return pygan_emu::concurrent_blocks(); }
std::vector<std::pair<std::string, unsigned>> pygan_emulation_recent_launches() {
  std::lock_guard<std::mutex> lock(pygan_emu::launch_mutex());
  return pygan_emu::recent_launches();
}

// Launch a kernel that faults on purpose, into `out` (at least 64 floats, 16-byte aligned), so a
// test sees the error as Python does: "misaligned" (a float4 load at a 4-byte offset),
// "divergent" (__syncthreads() in divergent code); anything else throws std::invalid_argument.
void pygan_emulation_faulty_kernel(const std::string& kind, float* out) {
  cudaStream_t s = nullptr;
  if (kind == "misaligned")
    PYGAN_LAUNCH(misaligned_load, 1, 8, 0, s, out, out + 32);
  else if (kind == "divergent")
    PYGAN_LAUNCH(divergent_barrier, 1, 32, 0, s, out);
  else if (kind == "mma_missing_lane")
    PYGAN_LAUNCH(mma_missing_lane, 1, 32, 0, s, out);
  else
    throw std::invalid_argument("_emulation_faulty_kernel: kind must be 'misaligned', 'divergent' or 'mma_missing_lane'");
}

// One emulated mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 (32 threads building their
// fragments by the PTX layout): d (16x8) = a (16x8) * b (8x8) + c (16x8), all row-major float32.
void pygan_emulation_mma_tf32(const float* a, const float* b, const float* c, float* d) {
  PYGAN_LAUNCH(mma_tf32_tile, 1, 32, 0, nullptr, a, b, c, d);
}
