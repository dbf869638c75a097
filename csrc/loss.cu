// binary_cross_entropy_with_logits, mean reduction: loss = mean(max(x,0) - x*t + log1p(exp(-|x|))),
// dlogits = (sigmoid(x) - t) * dloss / n. Stable for any finite logit (exp only sees -|x|); NaN in
// a logit or target makes the loss NaN (no fmaxf, which would drop it). Both variants are
// deterministic (fixed reduction order for a given n; no atomics).
//
// Variants (forward; the backward is one scalar grid-stride kernel for both):
//   1: one block of 512 threads reduces everything (a plain port; fine for a GAN's batch of logits)
//   2: two passes: up to 1024 blocks write per-block partial sums to a workspace, then one block
//      sums the partials. Default (the same speed for small n, scales to large n).
#include "common.cuh"
#include "launchers.h"

namespace pygan {
namespace {

constexpr int kOneBlock = 512;       // variant 1
constexpr int kBlock = 256;          // variant 2, pass 1, and the backward
constexpr int kFinalBlock = 256;     // variant 2, pass 2
constexpr int kItemsPerThread = 8;   // variant 2: blocks = ceil(n / (kBlock * 8)), at most kMaxPartials
constexpr std::int64_t kMaxPartials = 1024;

__device__ __forceinline__ float bce_term(float x, float t) {
  const float relu = x > 0.0f ? x : 0.0f;
  return relu - x * t + log1pf(expf(-fabsf(x)));
}

__device__ __forceinline__ float grid_stride_sum(const float* x, const float* t, std::int64_t n) {
  float acc = 0.0f;
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
    acc += bce_term(x[i], t[i]);
  return acc;
}

// variant 1: grid of one block.
__global__ void forward_one_block(const float* x, const float* t, float* loss, std::int64_t n) {
  const float total = block_reduce_sum(grid_stride_sum(x, t, n));
  if (threadIdx.x == 0) loss[0] = total / static_cast<float>(n);
}

// variant 2, pass 1: partial[blockIdx.x] = this block's share of the sum.
__global__ void forward_partials(const float* x, const float* t, float* partial, std::int64_t n) {
  const float total = block_reduce_sum(grid_stride_sum(x, t, n));
  if (threadIdx.x == 0) partial[blockIdx.x] = total;
}

// variant 2, pass 2: one block sums `count` partials.
__global__ void sum_partials(const float* partial, int count, float* loss, std::int64_t n) {
  float acc = 0.0f;
  for (int i = threadIdx.x; i < count; i += blockDim.x) acc += partial[i];
  acc = block_reduce_sum(acc);
  if (threadIdx.x == 0) loss[0] = acc / static_cast<float>(n);
}

__global__ void backward_kernel(const float* x, const float* t, const float* dloss, float* dx, std::int64_t n) {
  const float scale = __ldg(dloss) / static_cast<float>(n);
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const float v = x[i];
    const float e = expf(-fabsf(v));
    const float r = 1.0f / (1.0f + e);
    const float sig = v < 0.0f ? r * e : r;
    dx[i] = (sig - t[i]) * scale;
  }
}

int resolve(int variant) {
  if (variant == 0) variant = 2;
  check_variant(variant, 2, "loss");
  return variant;
}

std::int64_t partial_count(std::int64_t n) {
  const std::int64_t blocks = ceil_div<std::int64_t>(n, kBlock * kItemsPerThread);
  return blocks < 1 ? 1 : (blocks < kMaxPartials ? blocks : kMaxPartials);
}

}  // namespace

std::vector<std::string> loss_variants() {
  return {"one-block reduction", "two-pass: per-block partials, then one block"};
}

std::int64_t bce_workspace_size(std::int64_t n, int variant) {
  return resolve(variant) == 2 ? partial_count(n) : 0;
}

void bce_forward(const float* logits, const float* target, float* workspace, float* loss, std::int64_t n,
                 int variant, std::uintptr_t stream) {
  variant = resolve(variant);
  if (n <= 0) throw std::invalid_argument("bce_forward: the input is empty");
  const cudaStream_t s = stream_from(stream);
  if (variant == 1) {
    PYGAN_LAUNCH(forward_one_block, 1, kOneBlock, 0, s, logits, target, loss, n);
  } else {
    const int blocks = static_cast<int>(partial_count(n));
    PYGAN_LAUNCH(forward_partials, blocks, kBlock, 0, s, logits, target, workspace, n);
    PYGAN_LAUNCH(sum_partials, 1, kFinalBlock, 0, s, workspace, blocks, loss, n);
  }
}

void bce_backward(const float* logits, const float* target, const float* dloss, float* dlogits,
                  std::int64_t n, int variant, std::uintptr_t stream) {
  resolve(variant);
  if (n <= 0) return;
  const std::int64_t cap = static_cast<std::int64_t>(sm_count()) * 16;
  const std::int64_t blocks = ceil_div<std::int64_t>(n, kBlock);
  PYGAN_LAUNCH(backward_kernel, static_cast<int>(blocks < cap ? blocks : cap), kBlock, 0, stream_from(stream),
               logits, target, dloss, dlogits, n);
}

}  // namespace pygan
