// The loss family: two mean-reduced losses, each a forward (deterministic reduction to one float)
// and a backward (one pass writing the gradient).
//
// binary_cross_entropy_with_logits, mean reduction: loss = mean(max(x,0) - x*t + log1p(exp(-|x|))),
// dlogits = (sigmoid(x) - t) * dloss / n. Stable for any finite logit (exp only sees -|x|); NaN in
// a logit or target makes the loss NaN (no fmaxf, which would drop it).
//
// softmax_cross_entropy (logits (rows, classes), int64 labels (rows,)): loss = mean over rows of
// logsumexp(x[r,:]) - x[r,label], with the max shift (log(sum exp(x - max)) + max), so any finite
// logits are stable (1e3, 1e4: no overflow); dlogits = (softmax(x[r,:]) - onehot(label)) * dloss / rows.
// One warp per row (lanes stride over the classes; warp-shuffle max and sum). A label outside
// [0, classes) is never used as an index: that row's loss term and gradient row are NaN, so the
// loss is NaN. This is the only range check for labels on the GPU: the registry (pygan.ops) checks
// the range on the host only for numpy labels, since reading a device array's min/max would
// synchronise the device with the host on every call (the embedding's policy, csrc/embedding.cu).
//
// Variants (forward, both losses; each backward is one kernel for both variants):
//   1: one block reduces everything (512 threads; a plain port; fine for a GAN's batch of logits or
//      a classifier's batch of rows)
//   2: two passes: up to 1024 blocks write per-block partial sums to a workspace, then one block
//      sums the partials. Default (the same speed for small n, scales to large n).
// Both variants are deterministic (fixed reduction order for a given size; no atomics).
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

// ---- softmax cross-entropy --------------------------------------------------------------------
constexpr int kRowsPerWarp = 4;  // variant 2: blocks = ceil(rows / (8 warps * 4)), at most kMaxPartials

__device__ __forceinline__ float quiet_nan() { return __int_as_float(0x7fffffff); }

// Over one row of k logits, by the 32 lanes of a warp (every lane gets the results): m = max
// (NaN-propagating), s = sum exp(x - m).
__device__ __forceinline__ void row_stats(const float* row, std::int64_t k, int lane, float& m, float& s) {
  float mx = -INFINITY;
  for (std::int64_t j = lane; j < k; j += 32) {
    const float v = row[j];
    mx = (v > mx || v != v) ? v : mx;
  }
  m = warp_reduce_max(mx);
  float acc = 0.0f;
  for (std::int64_t j = lane; j < k; j += 32) acc += expf(row[j] - m);
  s = warp_reduce_sum(acc);
}

// This thread's share of sum_r (logsumexp(x[r,:]) - x[r,label]): warp w of block b takes rows
// b*warps + w, then strides by the grid's warp count; lane 0 of each warp accumulates its rows.
__device__ __forceinline__ float ce_grid_stride_sum(const float* x, const std::int64_t* labels, std::int64_t rows,
                                                    std::int64_t k) {
  const int lane = threadIdx.x % 32;
  const std::int64_t warps = blockDim.x / 32;
  float acc = 0.0f;
  // `r` depends only on the warp: all 32 lanes run the same iterations (full-mask shuffles).
  for (std::int64_t r = blockIdx.x * warps + threadIdx.x / 32; r < rows; r += static_cast<std::int64_t>(gridDim.x) * warps) {
    const float* row = x + r * k;
    float m, s;
    row_stats(row, k, lane, m, s);
    if (lane == 0) {
      const std::int64_t label = labels[r];
      acc += (label >= 0 && label < k) ? logf(s) - (row[label] - m) : quiet_nan();
    }
  }
  return acc;
}

// variant 1: grid of one block.
__global__ void ce_forward_one_block(const float* x, const std::int64_t* labels, float* loss, std::int64_t rows,
                                     std::int64_t k) {
  const float total = block_reduce_sum(ce_grid_stride_sum(x, labels, rows, k));
  if (threadIdx.x == 0) loss[0] = total / static_cast<float>(rows);
}

// variant 2, pass 1 (pass 2 is sum_partials).
__global__ void ce_forward_partials(const float* x, const std::int64_t* labels, float* partial, std::int64_t rows,
                                    std::int64_t k) {
  const float total = block_reduce_sum(ce_grid_stride_sum(x, labels, rows, k));
  if (threadIdx.x == 0) partial[blockIdx.x] = total;
}

// One warp per row: dx[r, j] = (exp(x - m) / s - (j == label)) * dloss / rows.
__global__ void ce_backward_kernel(const float* x, const std::int64_t* labels, const float* dloss, float* dx,
                                   std::int64_t rows, std::int64_t k) {
  const float scale = __ldg(dloss) / static_cast<float>(rows);
  const int lane = threadIdx.x % 32;
  const std::int64_t warps = blockDim.x / 32;
  for (std::int64_t r = blockIdx.x * warps + threadIdx.x / 32; r < rows; r += static_cast<std::int64_t>(gridDim.x) * warps) {
    const float* row = x + r * k;
    float* out = dx + r * k;
    float m, s;
    row_stats(row, k, lane, m, s);
    const std::int64_t label = labels[r];
    const bool valid = label >= 0 && label < k;
    for (std::int64_t j = lane; j < k; j += 32) {
      const float p = expf(row[j] - m) / s;
      out[j] = valid ? (p - (j == label ? 1.0f : 0.0f)) * scale : quiet_nan();
    }
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

std::int64_t ce_partial_count(std::int64_t rows) {
  const std::int64_t blocks = ceil_div<std::int64_t>(rows, (kBlock / 32) * kRowsPerWarp);
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

// ---- softmax cross-entropy launchers -----------------------------------------------------------
std::int64_t softmax_cross_entropy_workspace_size(std::int64_t rows, int variant) {
  return resolve(variant) == 2 ? ce_partial_count(rows) : 0;
}

void softmax_cross_entropy_forward(const float* logits, const std::int64_t* labels, float* workspace, float* loss,
                                   std::int64_t rows, std::int64_t classes, int variant, std::uintptr_t stream) {
  variant = resolve(variant);
  if (rows <= 0 || classes <= 0) throw std::invalid_argument("softmax_cross_entropy_forward: the input is empty");
  const cudaStream_t s = stream_from(stream);
  if (variant == 1) {
    PYGAN_LAUNCH(ce_forward_one_block, 1, kOneBlock, 0, s, logits, labels, loss, rows, classes);
  } else {
    const int blocks = static_cast<int>(ce_partial_count(rows));
    PYGAN_LAUNCH(ce_forward_partials, blocks, kBlock, 0, s, logits, labels, workspace, rows, classes);
    PYGAN_LAUNCH(sum_partials, 1, kFinalBlock, 0, s, workspace, blocks, loss, rows);
  }
}

void softmax_cross_entropy_backward(const float* logits, const std::int64_t* labels, const float* dloss,
                                    float* dlogits, std::int64_t rows, std::int64_t classes, int variant,
                                    std::uintptr_t stream) {
  resolve(variant);
  if (rows <= 0 || classes <= 0) return;
  const std::int64_t cap = static_cast<std::int64_t>(sm_count()) * 16;
  const std::int64_t blocks = ceil_div<std::int64_t>(rows, kBlock / 32);
  PYGAN_LAUNCH(ce_backward_kernel, static_cast<int>(blocks < cap ? blocks : cap), kBlock, 0, stream_from(stream),
               logits, labels, dloss, dlogits, rows, classes);
}

}  // namespace pygan
