// Self-test of the host emulation (cuda_emu.h + common.cuh), compiled into pygan._emu only and
// run by tests/test_emulated_kernels.py through _emu._emulation_selftest(): each case launches a
// tiny kernel through PYGAN_LAUNCH and compares with what CUDA specifies.
#ifndef PYGAN_EMULATION
#error "selftest.cpp is for the emulation module only"
#endif
#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "../common.cuh"

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
  __shared__ float buf[64];
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

__global__ void atomics(float* sum, int* mx) {
  atomicAdd(sum, 1.0f);
  atomicMax(mx, static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x));
}

__global__ void partial_warp(float* out) {  // 40 threads: the second warp has 8 lanes
  out[threadIdx.x] = __shfl_down_sync(0xffffffffu, 1.0f, 4);
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
  return r;
}
