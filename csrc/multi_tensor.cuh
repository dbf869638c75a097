// multi_tensor.cuh: the multi-tensor launch plumbing shared by the optimiser kernels (adam.cu,
// rmsprop.cu). One launch updates up to kMax tensors: their descriptors travel in a struct passed
// by value as a kernel argument (no device allocation), and the grid is flattened over (tensor,
// chunk of `chunk` elements): block b finds its tensor from the prefix sums of chunk counts. More
// tensors (or more than 2^30 blocks) -> a few more launches.
//
//   TensorBatch<T, kMax>           the kernel argument; T is the family's descriptor (AdamTensor,
//                                  RmspropTensor), which has an `n` (element count)
//   batch_tensor(batch)            (device) index of the tensor block blockIdx.x works on
//   batch_range(batch, ti, chunk)  (device) [begin, end) of that block's elements in its tensor
//   for_each_batch<kMax>(tensors, chunk, aligned, launch, op)
//                                  packs the non-empty tensors into batches and calls launch(batch)
//                                  for each; aligned(t) says whether t's pointers are all 16-byte
//                                  aligned (vec4[k], for float4 variants)
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "common.cuh"

namespace pygan {

template <class T, int kMax>
struct TensorBatch {
  T t[kMax];
  int block_start[kMax + 1];  // prefix sums of chunk counts
  int vec4[kMax];            // 1 when all of the tensor's pointers are 16-byte aligned
  int count;
};

template <class Batch>
__device__ __forceinline__ int batch_tensor(const Batch& b) {
  int ti = 0;
  while (ti + 1 < b.count && b.block_start[ti + 1] <= static_cast<int>(blockIdx.x)) ++ti;
  return ti;
}

template <class Batch>
__device__ __forceinline__ void batch_range(const Batch& b, int ti, std::int64_t chunk, std::int64_t& begin,
                                            std::int64_t& end) {
  begin = static_cast<std::int64_t>(blockIdx.x - b.block_start[ti]) * chunk;
  end = begin + chunk < b.t[ti].n ? begin + chunk : b.t[ti].n;
}

template <int kMax, class T, class Aligned, class Launch>
void for_each_batch(const std::vector<T>& tensors, std::int64_t chunk, Aligned aligned, Launch launch,
                    const char* op) {
  TensorBatch<T, kMax> batch{};
  const auto flush = [&] {
    if (batch.count > 0 && batch.block_start[batch.count] > 0) launch(batch);
    batch = TensorBatch<T, kMax>{};
  };
  for (const T& a : tensors) {
    if (a.n <= 0) continue;
    const std::int64_t chunks = ceil_div<std::int64_t>(a.n, chunk);
    if (chunks > (std::int64_t{1} << 30)) throw std::invalid_argument(std::string(op) + ": a tensor has too many elements");
    if (batch.count == kMax || batch.block_start[batch.count] + chunks > (std::int64_t{1} << 30)) flush();
    const int k = batch.count++;
    batch.t[k] = a;
    batch.vec4[k] = aligned(a) ? 1 : 0;
    batch.block_start[k + 1] = batch.block_start[k] + static_cast<int>(chunks);
  }
  flush();
}

}  // namespace pygan
