// 2-D average pooling, NCHW, no padding, every window full (pygan/ops/reference.py):
//   forward   y[n,c,p,q]  = sum_{i<kh, j<kw} x[n,c,p*sh+i,q*sw+j] / (kh*kw),  OH = (H-kh)/sh + 1
//   backward  dx[n,c,h,v] = sum_{p,q : 0 <= h-p*sh < kh, 0 <= v-q*sw < kw} dy[n,c,p,q] / (kh*kw)
//             (windows may overlap when stride < kernel; rows/columns no window covers get 0)
//
// Variants (forward; the backward is one gather kernel for both: one thread per input element,
// summing the dy of every window that covers it, so no atomics; in the global case each input
// element has exactly one window and the loop is a single term):
//   1: one thread per output element, grid-stride (a plain port of the reference)
//   2: global pooling (kernel == whole image, OH = OW = 1: nn.GlobalAvgPool2d)
//      as one warp per (n, c) plane: lanes read consecutive elements (coalesced; variant 1's
//      thread-per-plane reads are H*W*4 bytes apart) and a warp shuffle reduction sums them in a
//      fixed order. Other shapes fall back to variant 1. Default (not yet timed: no GPU on the CI
//      machine; chosen for the coalescing, the only difference from variant 1).
// Determinism: fixed-order sums everywhere, no atomics.
#include "common.cuh"
#include "launchers.h"

namespace pygan {
namespace {

constexpr int kBlock = 256;
constexpr int kWarpsPerBlock = kBlock / 32;

// ---- variant 1: one thread per output ------------------------------------------------------------
__global__ void forward_direct(const float* x, float* y, Pool2dShape s) {
  const std::int64_t total = s.n * s.c * s.oh * s.ow;
  const float count = static_cast<float>(s.kh * s.kw);
  for (std::int64_t idx = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t q = idx % s.ow, p = idx / s.ow % s.oh, nc = idx / (s.ow * s.oh);
    const float* plane = x + nc * s.h * s.w + (p * s.sh) * s.w + q * s.sw;
    float acc = 0.0f;
    for (std::int64_t i = 0; i < s.kh; ++i)
      for (std::int64_t j = 0; j < s.kw; ++j) acc += plane[i * s.w + j];
    y[idx] = acc / count;
  }
}

// ---- variant 2: global pooling, one warp per (n, c) plane -----------------------------------------
__global__ void forward_global_warp(const float* x, float* y, std::int64_t planes, std::int64_t hw) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const float count = static_cast<float>(hw);
  // `plane` depends only on the warp: every lane of a warp runs the same iterations (full-mask shuffles).
  for (std::int64_t plane = static_cast<std::int64_t>(blockIdx.x) * kWarpsPerBlock + warp; plane < planes;
       plane += static_cast<std::int64_t>(gridDim.x) * kWarpsPerBlock) {
    const float* src = x + plane * hw;
    float acc = 0.0f;
    for (std::int64_t t = lane; t < hw; t += 32) acc += src[t];
    acc = warp_reduce_sum(acc);
    if (lane == 0) y[plane] = acc / count;
  }
}

// ---- backward (both variants): one thread per input element, gathering ----------------------------
__global__ void backward_gather(const float* dy, float* dx, Pool2dShape s) {
  const std::int64_t total = s.n * s.c * s.h * s.w;
  const float count = static_cast<float>(s.kh * s.kw);
  for (std::int64_t idx = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t v = idx % s.w, h = idx / s.w % s.h, nc = idx / (s.w * s.h);
    // windows p with p*sh <= h <= p*sh + kh - 1, i.e. ceil((h - kh + 1) / sh) <= p <= h / sh, within [0, OH)
    const std::int64_t p_lo = h - s.kh + 1 > 0 ? (h - s.kh + 1 + s.sh - 1) / s.sh : 0;
    const std::int64_t p_hi = h / s.sh < s.oh - 1 ? h / s.sh : s.oh - 1;
    const std::int64_t q_lo = v - s.kw + 1 > 0 ? (v - s.kw + 1 + s.sw - 1) / s.sw : 0;
    const std::int64_t q_hi = v / s.sw < s.ow - 1 ? v / s.sw : s.ow - 1;
    const float* g = dy + nc * s.oh * s.ow;
    float acc = 0.0f;
    for (std::int64_t p = p_lo; p <= p_hi; ++p)
      for (std::int64_t q = q_lo; q <= q_hi; ++q) acc += g[p * s.ow + q];
    dx[idx] = acc / count;
  }
}

int grid_for(std::int64_t work, int per_block) {
  const std::int64_t cap = static_cast<std::int64_t>(sm_count()) * 32;
  const std::int64_t blocks = ceil_div<std::int64_t>(work, per_block);
  return static_cast<int>(blocks < cap ? blocks : cap);
}

int resolve(int variant) {
  if (variant == 0) variant = 2;
  check_variant(variant, 2, "avg_pool2d");
  return variant;
}

void check_shape(const Pool2dShape& s) {
  if (s.kh < 1 || s.kw < 1 || s.sh < 1 || s.sw < 1)
    throw std::invalid_argument("avg_pool2d: kernel_size and stride must be >= 1");
  if (s.kh > s.h || s.kw > s.w) throw std::invalid_argument("avg_pool2d: kernel_size is larger than the input");
  if (s.oh != (s.h - s.kh) / s.sh + 1 || s.ow != (s.w - s.kw) / s.sw + 1)
    throw std::invalid_argument("avg_pool2d: output size does not match input, kernel_size and stride");
}

bool is_global(const Pool2dShape& s) { return s.kh == s.h && s.kw == s.w; }

}  // namespace

std::vector<std::string> avg_pool2d_variants() {
  return {"direct, one thread per output",
          "global pooling (kernel == image): one warp per (n, c) plane, coalesced; else variant 1"};
}

void avg_pool2d_forward(const float* x, float* y, const Pool2dShape& s, int variant, std::uintptr_t stream) {
  variant = resolve(variant);
  check_shape(s);
  if (s.n * s.c == 0) return;
  const cudaStream_t st = stream_from(stream);
  if (variant == 2 && is_global(s)) {
    const std::int64_t planes = s.n * s.c;
    PYGAN_LAUNCH(forward_global_warp, grid_for(planes, kWarpsPerBlock), kBlock, 0, st, x, y, planes, s.h * s.w);
  } else {
    PYGAN_LAUNCH(forward_direct, grid_for(s.n * s.c * s.oh * s.ow, kBlock), kBlock, 0, st, x, y, s);
  }
}

void avg_pool2d_backward(const float* dy, float* dx, const Pool2dShape& s, int variant, std::uintptr_t stream) {
  resolve(variant);
  check_shape(s);
  if (s.n * s.c == 0) return;
  PYGAN_LAUNCH(backward_gather, grid_for(s.n * s.c * s.h * s.w, kBlock), kBlock, 0, stream_from(stream), dy, dx, s);
}

}  // namespace pygan
