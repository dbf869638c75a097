// 2-D convolution (cross-correlation, as PyTorch), NCHW input, OIHW weight, any kernel size,
// stride and padding per dimension: the three computations of pygan/ops/reference.py
//   forward          y[n,o,p,q]  = b[o] + sum_{c,i,j} x[n,c,p*sh-ph+i,q*sw-pw+j] * w[o,c,i,j]
//   backward-data    dx[n,c,h,v] = sum_{o,i,j : h = p*sh-ph+i, v = q*sw-pw+j} dy[n,o,p,q] * w[o,c,i,j]
//   backward-weight  dw[o,c,i,j] = sum_{n,p,q} dy[n,o,p,q] * x[n,c,p*sh-ph+i,q*sw-pw+j]
// plus the bias gradient db[o] = sum_{n,p,q} dy[n,o,p,q]. conv_transpose2d runs on these (its
// forward is backward-data, its backward-data is forward, its backward-weight is backward-weight
// with x and dy swapped); the wiring is in pygan/ops/native_conv_bn.py.
//
// As implicit GEMMs (nothing materialised; operands gathered on the fly while loading tiles):
//   forward          M = O, N = batch*OH*OW, K = C*kh*kw;  A = w as (O, C*kh*kw), B = im2col(x)
//   backward-data    M = C, N = batch*H*W,   K = O*kh*kw;  A = w^T, B = the matching dy entry or 0
//                    (zero where (h + ph - i) is not a multiple of the stride or out of range)
//   backward-weight  M = O, N = C*kh*kw,     K = batch*OH*OW; A = dy as (O, batch*OH*OW), B = im2col(x)^T
//
// Variants (launchers take `variant`; 0 picks the default):
//   1: direct, one thread per output element (a plain port of the reference formulas)
//   2: implicit GEMM, 16x16 output tile per 256-thread block, 16-deep shared-memory K tiles, one
//      output per thread
//   3: implicit GEMM with register blocking: 64x64 tile, 8-deep K tiles, each thread a 4x4
//      micro-tile (strided, conflict-light shared reads); a 16x128 tile with 1x8 micro-tiles when
//      M <= 16 (the 1- and 3-channel edge layers of DCGAN). DEFAULT: most optimised verified
//      variant, chosen without measurement: GPU timing is still owed (no GPU on the CI machine).
//   4: variant 3 plus 128-bit (float4) global loads of the tile operands: each thread gathers 4
//      consecutive A entries along K and 4 consecutive B entries along N, and loads them as one
//      float4 where they are contiguous, in range and 16-byte aligned (scalar loads otherwise)
//   5: OPT-IN TF32 tensor cores (wmma m16n16k8, precision::tf32, fp32 accumulation), 64x64 tile,
//      16-deep K tiles, 4 warps of 32x32; operands rounded to TF32 (10-bit mantissa), so it is
//      tested at a looser tolerance and never the default. nvcc only (sm_80+): under emulation
//      selecting it raises ValueError (tensor-core instructions are not emulated). The launcher
//      checks the arch the kernel was compiled for (cudaFuncGetAttributes' ptxVersion) as well as
//      the GPU's, and raises ValueError when either is below 8.0; the body traps below sm_80.
//   6: stride-aware backward-data (so also conv_transpose2d's forward): the output positions split
//      into sh*sw phases by (h + ph) mod sh and (v + pw) mod sw; the taps that reach a phase are
//      exactly i = (h + ph) mod sh + a*sh, j = (v + pw) mod sw + b*sw, so each phase is a dense
//      implicit GEMM (M = C, N = batch * its rows * its columns, K = O * its taps) run with variant
//      3's register-blocked tiles, one launch per phase: no multiply-add on the stride's structural
//      zeros (variant 3 spends 1 - 1/(sh*sw) of them there: three quarters at stride 2). Only the
//      padding border still reads zeros. A phase no tap reaches (kh < sh) gets dx = 0 from a K = 0
//      GEMM. Forward and backward-weight are variant 3's. NOT the default: it should beat variant 3
//      at stride 2, but no GPU has timed it yet (the default stays 3 until one does).
//   7: variant 6 plus a reduction kernel for small outputs with a long K in forward and backward-data
//      (D's last layer: 512 -> 1 channel at 4x4, M = 1, N = batch, K = 8192, which variant 3 runs
//      as ONE block looping over all of K): when the GEMM would have fewer tiles than the GPU has
//      SMs, at most 32 outputs per SM and K >= 256, one 256-thread block per output element sums
//      its K products in a fixed order (block_reduce_sum): deterministic, no workspace, no atomics.
//      Backward-weight as variant 3 (it already splits K). The thresholds are a guess; NOT the
//      default: untimed (no GPU).
//   (Issue 16 calls the next two its "variant 6" and "variant 7"; here 6 and 7 were taken, so they
//   are 8 and 9.)
//   8: pipelined FP32 implicit GEMM (gemm_pipelined): 128x128 block tiles (32x256 when M <= 32), 256
//      threads, 8x8 register micro-tiles (4x8 in the 32-row tile) read from shared memory as float4,
//      K in steps of 8 through two shared-memory stages (cp.async commit/wait groups on sm_80+,
//      plain loads below, plain copies under emulation): the next stage's copies are in flight while
//      the block multiplies the current one. Gather positions without divides in the K loop: a K
//      cursor decomposed once per block and moved by additions, per-column origins set up once.
//      Backward-data by output phase as variant 6; backward-weight with the split-K workspace.
//      NOT the default: untimed (no GPU).
//   9: OPT-IN TF32 tensor cores through inline PTX mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32
//      on variant 8's tiling and loads (8 warps of 64x32 or 32x32 warp tiles of m16n8k8 steps;
//      fragments read from shared memory by the PTX fragment layout, rounded by cvt.rna.tf32.f32;
//      fp32 accumulation). Tested at a TF32 tolerance; the default conv kernel only with
//      pygan.backends.tf32 / PYGAN_TF32=1. sm_80+: the launcher raises ValueError below (naming the
//      arch, as variant 5's does); under emulation it RUNS, through the emulator's exact mma.sync
//      (csrc/ptx.cuh, csrc/emu/cuda_emu.h). Untimed (no GPU).
// Determinism: no variant uses atomics; every output is a fixed-order sum. Backward-weight in
// variants 2-9 splits its long K (batch*OH*OW) over gridDim.z blocks that write partial sums
// to a workspace (conv2d_backward_weight_workspace_size floats), then one kernel adds the splits
// in order: bitwise reproducible run to run.
// Variants 2-5 multiply the structural zeros of strided convs in backward-data; variants 6-9 do not.
#include "common.cuh"
#include "launchers.h"
#include "ptx.cuh"

#include <climits>
#include <type_traits>
#if !defined(PYGAN_EMULATION)
#include <mma.h>
#endif

namespace pygan {
namespace {

constexpr int kBlock = 256;

// ---- variant 1: direct -------------------------------------------------------------------------
__global__ void forward_direct(const float* x, const float* w, const float* b, float* y, Conv2dShape s) {
  const std::int64_t total = s.n * s.o * s.oh * s.ow;
  for (std::int64_t idx = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t q = idx % s.ow, p = idx / s.ow % s.oh, o = idx / (s.ow * s.oh) % s.o, n = idx / (s.ow * s.oh * s.o);
    float acc = b ? b[o] : 0.0f;
    for (std::int64_t c = 0; c < s.c; ++c)
      for (std::int64_t i = 0; i < s.kh; ++i) {
        const std::int64_t h = p * s.sh - s.ph + i;
        if (h < 0 || h >= s.h) continue;
        for (std::int64_t j = 0; j < s.kw; ++j) {
          const std::int64_t v = q * s.sw - s.pw + j;
          if (v < 0 || v >= s.w) continue;
          acc += x[((n * s.c + c) * s.h + h) * s.w + v] * w[((o * s.c + c) * s.kh + i) * s.kw + j];
        }
      }
    y[idx] = acc;
  }
}

__global__ void backward_data_direct(const float* dy, const float* w, float* dx, Conv2dShape s) {
  const std::int64_t total = s.n * s.c * s.h * s.w;
  for (std::int64_t idx = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t v = idx % s.w, h = idx / s.w % s.h, c = idx / (s.w * s.h) % s.c, n = idx / (s.w * s.h * s.c);
    float acc = 0.0f;
    for (std::int64_t o = 0; o < s.o; ++o)
      for (std::int64_t i = 0; i < s.kh; ++i) {
        const std::int64_t th = h + s.ph - i;
        if (th < 0 || th % s.sh) continue;
        const std::int64_t p = th / s.sh;
        if (p >= s.oh) continue;
        for (std::int64_t j = 0; j < s.kw; ++j) {
          const std::int64_t tw = v + s.pw - j;
          if (tw < 0 || tw % s.sw) continue;
          const std::int64_t q = tw / s.sw;
          if (q >= s.ow) continue;
          acc += dy[((n * s.o + o) * s.oh + p) * s.ow + q] * w[((o * s.c + c) * s.kh + i) * s.kw + j];
        }
      }
    dx[idx] = acc;
  }
}

__global__ void backward_weight_direct(const float* x, const float* dy, float* dw, Conv2dShape s) {
  const std::int64_t total = s.o * s.c * s.kh * s.kw;
  for (std::int64_t idx = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t j = idx % s.kw, i = idx / s.kw % s.kh, c = idx / (s.kw * s.kh) % s.c, o = idx / (s.kw * s.kh * s.c);
    float acc = 0.0f;
    for (std::int64_t n = 0; n < s.n; ++n)
      for (std::int64_t p = 0; p < s.oh; ++p) {
        const std::int64_t h = p * s.sh - s.ph + i;
        if (h < 0 || h >= s.h) continue;
        for (std::int64_t q = 0; q < s.ow; ++q) {
          const std::int64_t v = q * s.sw - s.pw + j;
          if (v < 0 || v >= s.w) continue;
          acc += dy[((n * s.o + o) * s.oh + p) * s.ow + q] * x[((n * s.c + c) * s.h + h) * s.w + v];
        }
      }
    dw[idx] = acc;
  }
}

// ---- implicit-GEMM problems: a(m, k), b(k, col), store(m, col, value) ----------------------------
// 32-bit indices: the launchers check that every tensor has fewer than 2^31 elements.
struct Dims {
  int n, c, h, w, o, kh, kw, oh, ow, sh, sw, ph, pw;
};

Dims dims_of(const Conv2dShape& s) {
  return {int(s.n), int(s.c), int(s.h), int(s.w), int(s.o), int(s.kh), int(s.kw),
          int(s.oh), int(s.ow), int(s.sh), int(s.sw), int(s.ph), int(s.pw)};
}

// Index into x of x[n, c, p*sh - ph + i, q*sw - pw + j] for patch entry k = (c, i, j) and output
// position col = (n, p, q); -1 where that falls in the padding.
__device__ __forceinline__ int im2col_index(const Dims& d, int k, int col) {
  const int khw = d.kh * d.kw, ohw = d.oh * d.ow;
  const int c = k / khw, r = k - c * khw, i = r / d.kw, j = r - i * d.kw;
  const int n = col / ohw, t = col - n * ohw, p = t / d.ow, q = t - p * d.ow;
  const int h = p * d.sh - d.ph + i, v = q * d.sw - d.pw + j;
  return (h >= 0 && h < d.h && v >= 0 && v < d.w) ? ((n * d.c + c) * d.h + h) * d.w + v : -1;
}

__device__ __forceinline__ float im2col(const float* x, const Dims& d, int k, int col) {
  const int idx = im2col_index(d, k, col);
  return idx >= 0 ? x[idx] : 0.0f;
}

// ---- variants 8 and 9: operand positions without divides in the K loop ----------------------------
// Each problem's K index is k = (outer * r1 + mid) * r2 + inner (forward: (c, i, j) over (kh, kw);
// backward-data by phase: (o, a, b) over (khr, kwr); backward-weight: (n, p, q) over (oh, ow)). A
// KCursor holds one k both ways; it is decomposed with divides once per block (kcursor_at) and then
// moved by a fixed step whose decomposition is also computed once (kcursor_add: two compares, no
// divide). Each output column's part of the gather (a TileCol: a base offset and a 2-D origin) is
// likewise computed once per block, so the K loop only adds, multiplies and compares.
struct KRadix {
  int r1, r2;
};
struct KCursor {
  std::int64_t k;  // 64-bit: k0 + offset passes 2^31 near the end of a K of almost 2^31
  int outer, mid, inner;
};
__device__ __forceinline__ KCursor kcursor_at(std::int64_t k, KRadix r) {
  const std::int64_t plane = static_cast<std::int64_t>(r.r1) * r.r2, rem = k % plane;
  return {k, static_cast<int>(k / plane), static_cast<int>(rem / r.r2), static_cast<int>(rem % r.r2)};
}
// c += step, where step < r1 * r2 * anything and step's own (mid, inner) are < (r1, r2): one carry
// per digit at most.
__device__ __forceinline__ void kcursor_add(KCursor& c, const KCursor& step, KRadix r) {
  c.k += step.k;
  c.inner += step.inner;
  if (c.inner >= r.r2) c.inner -= r.r2, ++c.mid;
  c.mid += step.mid;
  if (c.mid >= r.r1) c.mid -= r.r1, ++c.outer;
  c.outer += step.outer;
}
// One output column's gather origin; a column past N gets h = kNoRow, which every bounds check fails.
struct TileCol {
  int base, h, w;
};
constexpr int kNoRow = INT_MIN / 4;

struct ForwardProblem {
  const float* x;
  const float* w;
  const float* b;
  float* y;
  Dims d;
  int M, N, K;
  __device__ __forceinline__ float a(int m, int k) const { return w[m * K + k]; }
  __device__ __forceinline__ float bval(int k, int col) const { return im2col(x, d, k, col); }
  // variant 4: the same entries as (base pointer, index or -1 for a structural zero)
  __device__ __forceinline__ const float* aptr() const { return w; }
  __device__ __forceinline__ int a_index(int m, int k) const { return m * K + k; }
  __device__ __forceinline__ const float* bptr() const { return x; }
  __device__ __forceinline__ int b_index(int k, int col) const { return im2col_index(d, k, col); }
  __device__ __forceinline__ void store(int m, int col, float v) const {
    const int ohw = d.oh * d.ow, n = col / ohw, t = col - n * ohw;
    y[(n * d.o + m) * ohw + t] = v + (b ? b[m] : 0.0f);
  }
  // variants 8, 9: k = (c, i, j), col = (n, p, q)
  __device__ __forceinline__ KRadix radix() const { return {d.kh, d.kw}; }
  __device__ __forceinline__ TileCol column(std::int64_t col) const {
    if (col >= N) return {0, kNoRow, 0};
    const int ohw = d.oh * d.ow, n = int(col / ohw), t = int(col - std::int64_t(n) * ohw), p = t / d.ow, q = t - p * d.ow;
    return {n * d.c * d.h * d.w, p * d.sh - d.ph, q * d.sw - d.pw};
  }
  __device__ __forceinline__ int a_at(int m, const KCursor& c) const { return m * K + int(c.k); }
  __device__ __forceinline__ int b_at(const TileCol& t, const KCursor& c) const {
    const int h = t.h + c.mid, v = t.w + c.inner;
    return (h >= 0 && h < d.h && v >= 0 && v < d.w) ? t.base + (c.outer * d.h + h) * d.w + v : -1;
  }
};

struct BackwardDataProblem {
  const float* dy;
  const float* w;
  float* dx;
  Dims d;
  int M, N, K;
  // m = c, k = (o, i, j): w[o, c, i, j]
  __device__ __forceinline__ int a_index(int m, int k) const {
    const int khw = d.kh * d.kw, o = k / khw, r = k - o * khw;
    return (o * d.c + m) * khw + r;
  }
  __device__ __forceinline__ float a(int m, int k) const { return w[a_index(m, k)]; }
  // k = (o, i, j), col = (n, h, v): dy[n, o, p, q] when h = p*sh - ph + i, v = q*sw - pw + j
  // (index into dy, or -1 for a structural zero)
  __device__ __forceinline__ int b_index(int k, int col) const {
    const int khw = d.kh * d.kw, o = k / khw, r = k - o * khw, i = r / d.kw, j = r - i * d.kw;
    const int hw = d.h * d.w, n = col / hw, t = col - n * hw, h = t / d.w, v = t - h * d.w;
    const int th = h + d.ph - i, tw = v + d.pw - j;
    if (th < 0 || tw < 0) return -1;
    const int p = th / d.sh, q = tw / d.sw;
    if (p * d.sh != th || q * d.sw != tw || p >= d.oh || q >= d.ow) return -1;
    return ((n * d.o + o) * d.oh + p) * d.ow + q;
  }
  __device__ __forceinline__ float bval(int k, int col) const {
    const int idx = b_index(k, col);
    return idx >= 0 ? dy[idx] : 0.0f;
  }
  __device__ __forceinline__ const float* aptr() const { return w; }
  __device__ __forceinline__ const float* bptr() const { return dy; }
  __device__ __forceinline__ void store(int m, int col, float v) const {
    const int hw = d.h * d.w, n = col / hw, t = col - n * hw;
    dx[(n * d.c + m) * hw + t] = v;
  }
};

// Variant 6: backward-data restricted to one output phase (rh, rw) = ((h + ph) mod sh, (v + pw) mod sw).
// Its rows are h = h0 + hh*sh (hh < hr), its columns v = v0 + vv*sw (vv < wr); the taps reaching them
// are i = rh + a*sh (a < khr), j = rw + b*sw (b < kwr), and then p = (h + ph - i) / sh exactly.
//   m = c, k = (o, a, b), col = (n, hh, vv)
struct BackwardDataPhaseProblem {
  const float* dy;
  const float* w;
  float* dx;
  Dims d;
  int rh, rw, h0, v0, hr, wr, khr, kwr;
  int M, N, K;
  __device__ __forceinline__ int a_index(int m, int k) const {
    const int taps = khr * kwr, o = k / taps, r = k - o * taps, a = r / kwr, b = r - a * kwr;
    return ((o * d.c + m) * d.kh + (rh + a * d.sh)) * d.kw + (rw + b * d.sw);
  }
  __device__ __forceinline__ float a(int m, int k) const { return w[a_index(m, k)]; }
  // index into dy, or -1 where the tap falls outside dy (the padding border)
  __device__ __forceinline__ int b_index(int k, int col) const {
    const int taps = khr * kwr, o = k / taps, r = k - o * taps, a = r / kwr, b = r - a * kwr;
    const int hw = hr * wr, n = col / hw, t = col - n * hw, hh = t / wr, vv = t - hh * wr;
    // h + ph - i = (h0 + ph - rh) + (hh - a) * sh, and h0 + ph - rh is a multiple of sh
    const int p = (h0 + d.ph - rh) / d.sh + hh - a, q = (v0 + d.pw - rw) / d.sw + vv - b;
    if (p < 0 || q < 0 || p >= d.oh || q >= d.ow) return -1;
    return ((n * d.o + o) * d.oh + p) * d.ow + q;
  }
  __device__ __forceinline__ float bval(int k, int col) const {
    const int idx = b_index(k, col);
    return idx >= 0 ? dy[idx] : 0.0f;
  }
  __device__ __forceinline__ const float* aptr() const { return w; }
  __device__ __forceinline__ const float* bptr() const { return dy; }
  __device__ __forceinline__ void store(int m, int col, float v) const {
    const int hw = hr * wr, n = col / hw, t = col - n * hw, hh = t / wr, vv = t - hh * wr;
    dx[((n * d.c + m) * d.h + h0 + hh * d.sh) * d.w + v0 + vv * d.sw] = v;
  }
  // variants 8, 9: k = (o, a, b), col = (n, hh, vv); dy's row p = (h0 + ph - rh) / sh + hh - a
  __device__ __forceinline__ KRadix radix() const { return {khr, kwr}; }
  __device__ __forceinline__ TileCol column(std::int64_t col) const {
    if (col >= N) return {0, kNoRow, 0};
    const int hw = hr * wr, n = int(col / hw), t = int(col - std::int64_t(n) * hw), hh = t / wr, vv = t - hh * wr;
    return {n * d.o * d.oh * d.ow, (h0 + d.ph - rh) / d.sh + hh, (v0 + d.pw - rw) / d.sw + vv};
  }
  __device__ __forceinline__ int a_at(int m, const KCursor& c) const {
    return ((c.outer * d.c + m) * d.kh + (rh + c.mid * d.sh)) * d.kw + (rw + c.inner * d.sw);
  }
  __device__ __forceinline__ int b_at(const TileCol& t, const KCursor& c) const {
    const int p = t.h - c.mid, q = t.w - c.inner;
    return (p >= 0 && p < d.oh && q >= 0 && q < d.ow) ? t.base + (c.outer * d.oh + p) * d.ow + q : -1;
  }
};

struct BackwardWeightProblem {
  const float* x;
  const float* dy;
  float* dw;
  Dims d;
  int M, N, K;
  // m = o, k = (n, p, q)
  __device__ __forceinline__ int a_index(int m, int k) const {
    const int ohw = d.oh * d.ow, n = k / ohw, t = k - n * ohw;
    return (n * d.o + m) * ohw + t;
  }
  __device__ __forceinline__ float a(int m, int k) const { return dy[a_index(m, k)]; }
  __device__ __forceinline__ float bval(int k, int col) const { return im2col(x, d, col, k); }
  __device__ __forceinline__ const float* aptr() const { return dy; }
  __device__ __forceinline__ const float* bptr() const { return x; }
  __device__ __forceinline__ int b_index(int k, int col) const { return im2col_index(d, col, k); }
  __device__ __forceinline__ void store(int m, int col, float v) const { dw[m * N + col] = v; }
  // variants 8, 9: k = (n, p, q), col = (c, i, j)
  __device__ __forceinline__ KRadix radix() const { return {d.oh, d.ow}; }
  __device__ __forceinline__ TileCol column(std::int64_t col) const {
    if (col >= N) return {0, kNoRow, 0};
    const int khw = d.kh * d.kw, c = int(col / khw), r = int(col - std::int64_t(c) * khw), i = r / d.kw, j = r - i * d.kw;
    return {c * d.h * d.w, i - d.ph, j - d.pw};
  }
  __device__ __forceinline__ int a_at(int m, const KCursor& c) const {
    return ((c.outer * d.o + m) * d.oh + c.mid) * d.ow + c.inner;
  }
  __device__ __forceinline__ int b_at(const TileCol& t, const KCursor& c) const {
    const int h = c.mid * d.sh + t.h, v = c.inner * d.sw + t.w;
    return (t.h != kNoRow && h >= 0 && h < d.h && v >= 0 && v < d.w) ? c.outer * d.c * d.h * d.w + t.base + h * d.w + v
                                                                       : -1;
  }
};

// ---- variant 4: 4 gathered entries as one float4 load where possible ------------------------------
// idx: indices into p of 4 operand entries (-1: a structural zero). One 128-bit load when they are
// consecutive, start on a multiple of 4 and p is 16-byte aligned; scalar loads otherwise.
__device__ __forceinline__ void load4(const float* p, bool p_aligned, const int (&idx)[4], float (&v)[4]) {
  if (p_aligned && idx[0] >= 0 && (idx[0] & 3) == 0 && idx[1] == idx[0] + 1 && idx[2] == idx[0] + 2 &&
      idx[3] == idx[0] + 3) {
    const float4 q = *reinterpret_cast<const float4*>(p + idx[0]);
    v[0] = q.x;
    v[1] = q.y;
    v[2] = q.z;
    v[3] = q.w;
  } else {
#pragma unroll
    for (int t = 0; t < 4; ++t) v[t] = idx[t] >= 0 ? p[idx[t]] : 0.0f;
  }
}

__device__ __forceinline__ bool aligned16(const float* p) {
  return (reinterpret_cast<std::uintptr_t>(p) & 15u) == 0;
}

// ---- variants 2, 3 and 4: tiled implicit GEMM ---------------------------------------------------
// Block (BM/TM)*(BN/TN) threads computes a BM x BN tile of the M x N output; each thread owns a
// TM x TN micro-tile at rows ty + i*(BM/TM), cols tx + j*(BN/TN) (consecutive threads on
// consecutive columns: coalesced stores, conflict-free shared reads). blockIdx.z picks a slice
// [z*kchunk, (z+1)*kchunk) of K; with gridDim.z > 1 the partial sums go to ws[z][m][col].
// VEC (variant 4): operands gathered 4 at a time (4 along K for A, 4 along N for B) through load4.
template <class P, int BM, int BN, int BK, int TM, int TN, bool VEC>
__global__ void __launch_bounds__((BM / TM) * (BN / TN)) gemm_tiled(P prob, float* ws, int kchunk) {
  constexpr int TX = BN / TN, TY = BM / TM, NT = TX * TY;
  static_assert(!VEC || (BK % 4 == 0 && BN % 4 == 0), "VEC loads 4 at a time");
  PYGAN_SHARED(float, As, [BK][BM + 1]);
  PYGAN_SHARED(float, Bs, [BK][BN]);
  const int tid = threadIdx.x, tx = tid % TX, ty = tid / TX;
  // Tile origins, K positions and columns in 64 bits: m0 + mm, n0 + nn, k0 + kk and k0 += BK pass
  // 2^31 near the edge before the bounds checks; narrowed to int only once in range.
  const std::int64_t m0 = tile_pos(blockIdx.y, BM, 0), n0 = tile_pos(blockIdx.x, BN, 0);
  const std::int64_t kbeg = tile_pos(blockIdx.z, kchunk, 0);
  const std::int64_t kend = slice_end(blockIdx.z, kchunk, prob.K);
  float acc[TM][TN];
#pragma unroll
  for (int i = 0; i < TM; ++i)
#pragma unroll
    for (int j = 0; j < TN; ++j) acc[i][j] = 0.0f;

  for (std::int64_t k0 = kbeg; k0 < kend; k0 += BK) {
    if constexpr (VEC) {
      const float* ap = prob.aptr();
      const float* bp = prob.bptr();
      const bool a_al = aligned16(ap), b_al = aligned16(bp);
      for (int g = tid; g < BM * BK / 4; g += NT) {
        const int mm = g / (BK / 4), kk = (g - mm * (BK / 4)) * 4;
        const std::int64_t m = m0 + mm, k = k0 + kk;
        int idx[4];
        float v[4];
#pragma unroll
        for (int t = 0; t < 4; ++t) idx[t] = (m < prob.M && k + t < kend) ? prob.a_index(int(m), int(k + t)) : -1;
        load4(ap, a_al, idx, v);
#pragma unroll
        for (int t = 0; t < 4; ++t) As[kk + t][mm] = v[t];
      }
      for (int g = tid; g < BK * BN / 4; g += NT) {
        const int kk = g / (BN / 4), nn = (g - kk * (BN / 4)) * 4;
        const std::int64_t col = n0 + nn, k = k0 + kk;
        int idx[4];
        float v[4];
#pragma unroll
        for (int t = 0; t < 4; ++t) idx[t] = (col + t < prob.N && k < kend) ? prob.b_index(int(k), int(col + t)) : -1;
        load4(bp, b_al, idx, v);
#pragma unroll
        for (int t = 0; t < 4; ++t) Bs[kk][nn + t] = v[t];
      }
    } else {
      for (int idx = tid; idx < BM * BK; idx += NT) {
        const int mm = idx / BK, kk = idx - mm * BK;
        const std::int64_t m = m0 + mm, k = k0 + kk;
        As[kk][mm] = (m < prob.M && k < kend) ? prob.a(int(m), int(k)) : 0.0f;
      }
      for (int idx = tid; idx < BK * BN; idx += NT) {
        const int kk = idx / BN, nn = idx - kk * BN;
        const std::int64_t col = n0 + nn, k = k0 + kk;
        Bs[kk][nn] = (col < prob.N && k < kend) ? prob.bval(int(k), int(col)) : 0.0f;
      }
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < BK; ++kk) {
      float ra[TM], rb[TN];
#pragma unroll
      for (int i = 0; i < TM; ++i) ra[i] = As[kk][ty + i * TY];
#pragma unroll
      for (int j = 0; j < TN; ++j) rb[j] = Bs[kk][tx + j * TX];
#pragma unroll
      for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] += ra[i] * rb[j];
    }
    __syncthreads();
  }

#pragma unroll
  for (int i = 0; i < TM; ++i) {
    const std::int64_t m = m0 + ty + i * TY;
    if (m >= prob.M) continue;
#pragma unroll
    for (int j = 0; j < TN; ++j) {
      const std::int64_t col = n0 + tx + j * TX;
      if (col >= prob.N) continue;
      if (gridDim.z > 1)
        ws[(static_cast<std::int64_t>(blockIdx.z) * prob.M + m) * prob.N + col] = acc[i][j];
      else
        prob.store(int(m), int(col), acc[i][j]);
    }
  }
}

// ---- variant 5: TF32 tensor cores (nvcc, sm_80+ only) ---------------------------------------------
// 128 threads = 4 warps; warp w computes the 32x32 quarter (w / 2, w % 2) of a 64x64 tile as 2x2
// wmma 16x16 accumulators, K in steps of 8. Operands are gathered as in variant 2/3 (scalar loads),
// rounded to TF32 on the way into shared memory; fp32 accumulation; the tile goes through shared
// memory so the epilogue (bounds, bias, split-K workspace) is the same as gemm_tiled's.
#if !defined(PYGAN_EMULATION)
template <class P>
__global__ void __launch_bounds__(128) gemm_wmma_tf32(P prob, float* ws, int kchunk) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
  namespace wmma = nvcuda::wmma;
  constexpr int BM = 64, BN = 64, BK = 16, NT = 128;
  constexpr int LDA = BK + 4, LDB = BN + 4, LDC = BN + 4;  // multiples of 4; fragment starts 32-byte aligned
  PYGAN_SHARED(__align__(32) float, As, [BM * LDA]);  // (m, k) row-major
  PYGAN_SHARED(__align__(32) float, Bs, [BK * LDB]);  // (k, n) row-major
  PYGAN_SHARED(__align__(32) float, Cs, [BM * LDC]);
  const int tid = threadIdx.x, warp = tid / 32;
  const int wm = (warp / 2) * 32, wn = (warp % 2) * 32;
  const std::int64_t m0 = tile_pos(blockIdx.y, BM, 0), n0 = tile_pos(blockIdx.x, BN, 0);  // 64-bit: see gemm_tiled
  const std::int64_t kbeg = tile_pos(blockIdx.z, kchunk, 0);
  const std::int64_t kend = slice_end(blockIdx.z, kchunk, prob.K);
  wmma::fragment<wmma::accumulator, 16, 16, 8, float> acc[2][2];
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j) wmma::fill_fragment(acc[i][j], 0.0f);

  for (std::int64_t k0 = kbeg; k0 < kend; k0 += BK) {
    for (int idx = tid; idx < BM * BK; idx += NT) {
      const int mm = idx / BK, kk = idx - mm * BK;
      const std::int64_t m = m0 + mm, k = k0 + kk;
      As[mm * LDA + kk] = wmma::__float_to_tf32((m < prob.M && k < kend) ? prob.a(int(m), int(k)) : 0.0f);
    }
    for (int idx = tid; idx < BK * BN; idx += NT) {
      const int kk = idx / BN, nn = idx - kk * BN;
      const std::int64_t col = n0 + nn, k = k0 + kk;
      Bs[kk * LDB + nn] = wmma::__float_to_tf32((col < prob.N && k < kend) ? prob.bval(int(k), int(col)) : 0.0f);
    }
    __syncthreads();
#pragma unroll
    for (int ks = 0; ks < BK; ks += 8) {
      wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::row_major> fa[2];
      wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::row_major> fb[2];
#pragma unroll
      for (int i = 0; i < 2; ++i) wmma::load_matrix_sync(fa[i], As + (wm + 16 * i) * LDA + ks, LDA);
#pragma unroll
      for (int j = 0; j < 2; ++j) wmma::load_matrix_sync(fb[j], Bs + ks * LDB + wn + 16 * j, LDB);
#pragma unroll
      for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 2; ++j) wmma::mma_sync(acc[i][j], fa[i], fb[j], acc[i][j]);
    }
    __syncthreads();
  }

#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j)
      wmma::store_matrix_sync(Cs + (wm + 16 * i) * LDC + wn + 16 * j, acc[i][j], LDC, wmma::mem_row_major);
  __syncthreads();
  for (int idx = tid; idx < BM * BN; idx += NT) {
    const int mm = idx / BN, nn = idx - mm * BN;
    const std::int64_t m = m0 + mm, col = n0 + nn;
    if (m >= prob.M || col >= prob.N) continue;
    const float v = Cs[mm * LDC + nn];
    if (gridDim.z > 1)
      ws[(static_cast<std::int64_t>(blockIdx.z) * prob.M + m) * prob.N + col] = v;
    else
      prob.store(int(m), int(col), v);
  }
#else
  // Compiled for an arch without TF32 tensor cores (a PTX-only build for an older arch, JIT-compiled
  // on a newer GPU): the launcher refuses this (check_tf32_kernel); should it ever run, fail loudly
  // rather than leave the output unwritten.
  __trap();
#endif
}
#endif  // !PYGAN_EMULATION

// ---- variants 8 and 9: pipelined implicit GEMM, 8x8 register tiles (8) or mma.sync TF32 (9) --------
// 256 threads compute a BM x BN tile (128 x 128; 32 x 256 when M <= 32, the 1- and 3-channel edge
// layers) with K in steps of 8, through two shared-memory stages: while the block multiplies stage
// s, the copies of the next K step into stage s ^ 1 are in flight (cp.async groups on sm_80+, plain
// loads below; plain copies under emulation). Loading: warp w fills K row w of both tiles, lane l
// the rows m0 + l + 32r of A and the columns n0 + l + 32r of B (coalesced along the columns), each
// element one 4-byte cp.async zero-filled outside the operands (padding, edge tiles, K's end). The
// gather positions come from a KCursor and per-column TileCols set up once per block: no integer
// divide inside the K loop. Shared tiles are K-major, As[k][m] and Bs[k][n], rows padded by 8
// floats: 16-byte aligned for float4 reads, and the mma fragment reads (8 rows by 4 K) hit 32
// different banks.
//   TF32 = false (variant 8): thread (ty, tx) owns an 8x8 micro-tile (4x8 for the 32-row tile) made
//     of float4 groups, rows g*TY*4 + ty*4 + 0..3 and columns g*TX*4 + tx*4 + 0..3, read from shared
//     memory as float4 (128-bit) loads.
//   TF32 = true (variant 9): warp (wy, wx) owns a WM x 32 warp tile (64 x 32, or 32 x 32) of
//     m16n8k8 steps; fragments are read from shared memory and rounded with cvt.rna.tf32.f32, then
//     mma.sync accumulates in fp32. sm_80+ only (the body traps below; launchers check first).
// gridDim.z > 1: split-K partial sums to ws[z][m][col], as gemm_tiled.
template <int BM, int BN>
struct alignas(16) PipelinedTiles {  // the two stages of both operands, K-major, rows padded by 8
  float a[2][8][BM + 8];
  float b[2][8][BN + 8];
};

template <class P, int BM, int BN, bool TF32>
__global__ void __launch_bounds__(256) gemm_pipelined(P prob, float* ws, int kchunk) {
#if !defined(PYGAN_EMULATION) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  if constexpr (TF32) {
    __trap();  // no tensor cores: the launcher refuses this (check_tf32_kernel) before it can run
    return;
  }
#endif
  constexpr int BK = 8, NT = 256;
  constexpr int AR = BM / 32, BR = BN / 32;  // A and B elements each thread copies per stage
  static_assert(BM % 32 == 0 && BN % 32 == 0 && NT / 32 == BK, "warp w loads K row w");
  using Tiles = PipelinedTiles<BM, BN>;
  PYGAN_SHARED(Tiles, tiles, );
  auto& As = tiles.a;
  auto& Bs = tiles.b;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const std::int64_t m0 = tile_pos(blockIdx.y, BM, 0), n0 = tile_pos(blockIdx.x, BN, 0);  // 64-bit: see gemm_tiled
  const std::int64_t kbeg = tile_pos(blockIdx.z, kchunk, 0);
  const std::int64_t kend = slice_end(blockIdx.z, kchunk, prob.K);
  const int ktiles = kend > kbeg ? static_cast<int>(ceil_div<std::int64_t>(kend - kbeg, BK)) : 0;

  // Once per block: this thread's K row as a cursor, the step between K tiles, its B columns.
  const KRadix radix = prob.radix();
  KCursor cur = kcursor_at(kbeg + warp, radix);
  KCursor step = kcursor_at(BK, radix);
  TileCol cols[BR];
#pragma unroll
  for (int r = 0; r < BR; ++r) cols[r] = prob.column(n0 + lane + 32 * r);
  const float* ap = prob.aptr();
  const float* bp = prob.bptr();

  const auto load_stage = [&](int s) {
    const bool k_in = cur.k < kend;
#pragma unroll
    for (int r = 0; r < AR; ++r) {
      const std::int64_t m = m0 + lane + 32 * r;
      const bool ok = k_in && m < prob.M;
      cp_async_f32(&As[s][warp][lane + 32 * r], ap + (ok ? prob.a_at(int(m), cur) : 0), ok);
    }
#pragma unroll
    for (int r = 0; r < BR; ++r) {
      const int idx = k_in ? prob.b_at(cols[r], cur) : -1;
      cp_async_f32(&Bs[s][warp][lane + 32 * r], bp + (idx >= 0 ? idx : 0), idx >= 0);
    }
    cp_async_commit();
    kcursor_add(cur, step, radix);
  };

  if constexpr (!TF32) {
    constexpr int TM = BM == 128 ? 8 : 4, TN = 8, TY = BM / TM, TX = BN / TN;
    static_assert(TY * TX == NT, "one micro-tile per thread");
    constexpr int GM = TM / 4, GN = TN / 4;  // float4 groups of rows, of columns
    const int tx = tid % TX, ty = tid / TX;
    float acc[TM][TN];
#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
      for (int j = 0; j < TN; ++j) acc[i][j] = 0.0f;
    if (ktiles > 0) load_stage(0);
    for (int t = 0; t < ktiles; ++t) {
      const int s = t & 1;
      if (t + 1 < ktiles) load_stage(s ^ 1);
      if (t + 1 < ktiles) cp_async_wait<1>(); else cp_async_wait<0>();  // stage s has landed
      __syncthreads();
#pragma unroll
      for (int kk = 0; kk < BK; ++kk) {
        float ra[TM], rb[TN];
#pragma unroll
        for (int g = 0; g < GM; ++g) {
          const float4 v = *reinterpret_cast<const float4*>(&As[s][kk][g * TY * 4 + ty * 4]);
          ra[4 * g] = v.x, ra[4 * g + 1] = v.y, ra[4 * g + 2] = v.z, ra[4 * g + 3] = v.w;
        }
#pragma unroll
        for (int g = 0; g < GN; ++g) {
          const float4 v = *reinterpret_cast<const float4*>(&Bs[s][kk][g * TX * 4 + tx * 4]);
          rb[4 * g] = v.x, rb[4 * g + 1] = v.y, rb[4 * g + 2] = v.z, rb[4 * g + 3] = v.w;
        }
#pragma unroll
        for (int i = 0; i < TM; ++i)
#pragma unroll
          for (int j = 0; j < TN; ++j) acc[i][j] += ra[i] * rb[j];
      }
      __syncthreads();  // stage s is refilled by the next iteration's load
    }
#pragma unroll
    for (int i = 0; i < TM; ++i) {
      const std::int64_t m = m0 + (i / 4) * TY * 4 + ty * 4 + i % 4;
      if (m >= prob.M) continue;
#pragma unroll
      for (int j = 0; j < TN; ++j) {
        const std::int64_t col = n0 + (j / 4) * TX * 4 + tx * 4 + j % 4;
        if (col >= prob.N) continue;
        if (gridDim.z > 1)
          ws[(static_cast<std::int64_t>(blockIdx.z) * prob.M + m) * prob.N + col] = acc[i][j];
        else
          prob.store(int(m), int(col), acc[i][j]);
      }
    }
  } else {
    constexpr int WN = 32, WARPS_N = BN / WN, WARPS_M = (NT / 32) / WARPS_N, WM = BM / WARPS_M;
    constexpr int MI = WM / 16, NI = WN / 8;  // m16n8k8 steps per warp tile
    static_assert(WARPS_M * WARPS_N == NT / 32 && WM % 16 == 0, "warp tiles cover the block tile");
    const int wm = (warp / WARPS_N) * WM, wn = (warp % WARPS_N) * WN, g = lane >> 2, q = lane & 3;
    float acc[MI][NI][4];
#pragma unroll
    for (int i = 0; i < MI; ++i)
#pragma unroll
      for (int j = 0; j < NI; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.0f;
    if (ktiles > 0) load_stage(0);
    for (int t = 0; t < ktiles; ++t) {
      const int s = t & 1;
      if (t + 1 < ktiles) load_stage(s ^ 1);
      if (t + 1 < ktiles) cp_async_wait<1>(); else cp_async_wait<0>();
      __syncthreads();
      // the PTX fragment layout: a0 (g, q), a1 (g + 8, q), a2 (g, q + 4), a3 (g + 8, q + 4) of A (m, k);
      // b0 (q, g), b1 (q + 4, g) of B (k, n)
      std::uint32_t af[MI][4], bf[NI][2];
#pragma unroll
      for (int i = 0; i < MI; ++i) {
        const int m = wm + 16 * i + g;
        af[i][0] = tf32_round(As[s][q][m]);
        af[i][1] = tf32_round(As[s][q][m + 8]);
        af[i][2] = tf32_round(As[s][q + 4][m]);
        af[i][3] = tf32_round(As[s][q + 4][m + 8]);
      }
#pragma unroll
      for (int j = 0; j < NI; ++j) {
        const int n = wn + 8 * j + g;
        bf[j][0] = tf32_round(Bs[s][q][n]);
        bf[j][1] = tf32_round(Bs[s][q + 4][n]);
      }
#pragma unroll
      for (int i = 0; i < MI; ++i)
#pragma unroll
        for (int j = 0; j < NI; ++j) mma_m16n8k8_tf32(acc[i][j], af[i], bf[j]);
      __syncthreads();
    }
    // d0 (g, 2q), d1 (g, 2q + 1), d2 (g + 8, 2q), d3 (g + 8, 2q + 1)
#pragma unroll
    for (int i = 0; i < MI; ++i)
#pragma unroll
      for (int j = 0; j < NI; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const std::int64_t m = m0 + wm + 16 * i + g + (e >= 2 ? 8 : 0);
          const std::int64_t col = n0 + wn + 8 * j + 2 * q + (e & 1);
          if (m >= prob.M || col >= prob.N) continue;
          if (gridDim.z > 1)
            ws[(static_cast<std::int64_t>(blockIdx.z) * prob.M + m) * prob.N + col] = acc[i][j][e];
          else
            prob.store(int(m), int(col), acc[i][j][e]);
        }
  }
}

// out[i] = sum_z ws[z * count + i], z in order: the deterministic end of split-K.
__global__ void sum_splits(const float* ws, float* out, std::int64_t count, int splits) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    float acc = 0.0f;
    for (int z = 0; z < splits; ++z) acc += ws[z * count + i];
    out[i] = acc;
  }
}

// Variant 7's small-output path: block e computes output e = (m, col) of the M x N GEMM as one
// fixed-order sum over K (each thread a strided share, then block_reduce_sum); grid-stride over e.
template <class P>
__global__ void dot_per_block(P prob) {
  const std::int64_t count = static_cast<std::int64_t>(prob.M) * prob.N;
  for (std::int64_t e = blockIdx.x; e < count; e += gridDim.x) {
    const int m = static_cast<int>(e / prob.N), col = static_cast<int>(e - static_cast<std::int64_t>(m) * prob.N);
    float acc = 0.0f;
    for (std::int64_t k = threadIdx.x; k < prob.K; k += blockDim.x) acc += prob.a(m, int(k)) * prob.bval(int(k), col);
    acc = block_reduce_sum(acc);
    if (threadIdx.x == 0) prob.store(m, col, acc);
    __syncthreads();  // block_reduce_sum's shared scratch is reused by the next e
  }
}

// db[o] = sum over (n, t) of dy[n, o, t]: one block per channel, fixed-order block reduction.
__global__ void channel_sum(const float* dy, float* db, std::int64_t n, std::int64_t c, std::int64_t hw) {
  const std::int64_t o = blockIdx.x, count = n * hw;
  float acc = 0.0f;
  for (std::int64_t idx = threadIdx.x; idx < count; idx += blockDim.x) {
    const std::int64_t b = idx / hw, t = idx - b * hw;
    acc += dy[(b * c + o) * hw + t];
  }
  acc = block_reduce_sum(acc);
  if (threadIdx.x == 0) db[o] = acc;
}

int grid_for(std::int64_t work) {
  const std::int64_t cap = static_cast<std::int64_t>(sm_count()) * 32;
  const std::int64_t blocks = ceil_div<std::int64_t>(work, kBlock);
  return static_cast<int>(blocks < cap ? blocks : cap);
}

constexpr int kTf32Variant = 5;
constexpr int kStrideAwareVariant = 6;  // backward-data by output phase; otherwise variant 3
constexpr int kSmallOutputVariant = 7;  // variant 6 plus dot_per_block for small outputs, long K
constexpr int kPipelinedVariant = 8;    // gemm_pipelined, fp32 (SIMT)
constexpr int kMmaTf32Variant = 9;      // gemm_pipelined, TF32 mma.sync; opt-in
constexpr int kVariantCount = 9;

int resolve(int variant) {
  if (variant == 0) variant = 3;  // the default; never the opt-in TF32 variant
  check_variant(variant, kVariantCount, "conv2d");
#if defined(PYGAN_EMULATION)
  if (variant == kTf32Variant)
    throw std::invalid_argument("conv2d: variant 5 (tf32) needs a GPU: tensor-core instructions are not emulated");
#endif
  return variant;
}

void check_dims(const Conv2dShape& s) {
  const std::int64_t sizes[] = {s.n * s.c * s.h * s.w, s.n * s.o * s.oh * s.ow, s.o * s.c * s.kh * s.kw};
  for (std::int64_t v : sizes)
    if (v >= INT_MAX) throw std::invalid_argument("conv2d: tensors of 2^31 or more elements are not supported");
  if (s.sh < 1 || s.sw < 1 || s.ph < 0 || s.pw < 0 || s.kh < 1 || s.kw < 1)
    throw std::invalid_argument("conv2d: bad stride, padding or kernel size");
}

bool empty(const Conv2dShape& s) {
  return s.n * s.c * s.h * s.w == 0 || s.n * s.o * s.oh * s.ow == 0 || s.o * s.c * s.kh * s.kw == 0;
}

#if !defined(PYGAN_EMULATION)
// Variants 5 and 9 run only where both the GPU (compute capability) and the code loaded for the kernel
// (its PTX arch, which is what __CUDA_ARCH__ was when its body was compiled) are 8.0 or newer:
// a build for an older arch run through PTX JIT on a newer GPU would pass a device check alone
// and run a kernel whose tensor-core body compiled out.
template <class P>
void check_tf32_kernel(void (*kern)(P, float*, int), int variant) {
  int device = 0, major = 0, minor = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device));
  cudaFuncAttributes attr{};
  CUDA_CHECK(cudaFuncGetAttributes(&attr, reinterpret_cast<const void*>(kern)));
  const std::string problem = tf32_arch_problem(attr.ptxVersion, major * 10 + minor, variant);
  if (!problem.empty()) throw std::invalid_argument(problem);
}
#endif

// Tile shape of variant 3: 64x64 (4x4 per thread), or 16x128 (1x8 per thread) for tiny M.
constexpr bool small_m(int M) { return M <= 16; }
// Tile shape of variants 8 and 9: 128x128, or 32x256 when M <= 32.
constexpr bool pipelined_small_m(std::int64_t M) { return M <= 32; }

// One BM x BN tile shape of variants 8 and 9.
template <class P, int BM, int BN, bool TF32>
void launch_pipelined_tiles(const P& prob, float* ws, int splits, int kchunk, cudaStream_t st) {
  auto kern = gemm_pipelined<P, BM, BN, TF32>;
#if !defined(PYGAN_EMULATION)
  if (TF32) check_tf32_kernel(kern, kMmaTf32Variant);
#endif
  const dim3 grid(ceil_div(prob.N, BN), ceil_div(prob.M, BM), splits);
  PYGAN_LAUNCH(kern, grid, 256, 0, st, prob, ws, kchunk);
}

// Variants 8 (TF32 = false) and 9 (TF32 = true).
template <class P, bool TF32>
void launch_pipelined(const P& prob, float* ws, int splits, int kchunk, cudaStream_t st) {
  if (pipelined_small_m(prob.M))
    launch_pipelined_tiles<P, 32, 256, TF32>(prob, ws, splits, kchunk, st);
  else
    launch_pipelined_tiles<P, 128, 128, TF32>(prob, ws, splits, kchunk, st);
}

template <class P, bool VEC>
void launch_register_blocked(const P& prob, float* ws, int splits, int kchunk, cudaStream_t st) {
  if (small_m(prob.M)) {
    auto kern = gemm_tiled<P, 16, 128, 8, 1, 8, VEC>;
    const dim3 grid(ceil_div(prob.N, 128), ceil_div(prob.M, 16), splits);
    PYGAN_LAUNCH(kern, grid, 256, 0, st, prob, ws, kchunk);
  } else {
    auto kern = gemm_tiled<P, 64, 64, 8, 4, 4, VEC>;
    const dim3 grid(ceil_div(prob.N, 64), ceil_div(prob.M, 64), splits);
    PYGAN_LAUNCH(kern, grid, 256, 0, st, prob, ws, kchunk);
  }
}


// Variant 7's rule (untimed guess): a GEMM of fewer tiles (variant 3's) than SMs, at most 32 outputs
// per SM, K >= 256. Never for split-K calls (backward-weight), which pass splits > 1 or a workspace.
template <class P>
bool use_dot_per_block(const P& prob) {
  const std::int64_t bm = small_m(prob.M) ? 16 : 64, bn = small_m(prob.M) ? 128 : 64;
  const std::int64_t tiles = ceil_div<std::int64_t>(prob.M, bm) * ceil_div<std::int64_t>(prob.N, bn);
  const std::int64_t outputs = static_cast<std::int64_t>(prob.M) * prob.N;
  return tiles < sm_count() && outputs <= 32 * static_cast<std::int64_t>(sm_count()) && prob.K >= 256;
}

template <class P>
void launch_gemm(const P& prob, int variant, float* ws, int splits, int kchunk, cudaStream_t st) {
  if (variant == kSmallOutputVariant && ws == nullptr && splits == 1 && use_dot_per_block(prob)) {
    const std::int64_t outputs = static_cast<std::int64_t>(prob.M) * prob.N;
    PYGAN_LAUNCH(dot_per_block<P>, static_cast<unsigned>(outputs), kBlock, 0, st, prob);
    return;
  }
  if (variant == 2) {
    auto kern = gemm_tiled<P, 16, 16, 16, 1, 1, false>;
    const dim3 grid(ceil_div(prob.N, 16), ceil_div(prob.M, 16), splits);
    PYGAN_LAUNCH(kern, grid, 256, 0, st, prob, ws, kchunk);
  } else if (variant == kTf32Variant) {
#if !defined(PYGAN_EMULATION)
    auto kern = gemm_wmma_tf32<P>;
    check_tf32_kernel(kern, kTf32Variant);
    const dim3 grid(ceil_div(prob.N, 64), ceil_div(prob.M, 64), splits);
    PYGAN_LAUNCH(kern, grid, 128, 0, st, prob, ws, kchunk);
#endif  // under emulation resolve() has already refused it
  } else if (variant == kPipelinedVariant || variant == kMmaTf32Variant) {
    // (backward-data runs by phase in these variants: the plain BackwardDataProblem never gets here)
    if constexpr (!std::is_same_v<P, BackwardDataProblem>) {
      if (variant == kPipelinedVariant)
        launch_pipelined<P, false>(prob, ws, splits, kchunk, st);
      else
        launch_pipelined<P, true>(prob, ws, splits, kchunk, st);
    }
  } else if (variant == 4) {
    launch_register_blocked<P, true>(prob, ws, splits, kchunk, st);
  } else {
    launch_register_blocked<P, false>(prob, ws, splits, kchunk, st);
  }
}

// Split-K plan of backward-weight: enough blocks to fill a large GPU (~256 tiles x splits),
// chunks a multiple of 16 (both BK) and at least 64 deep; at most 64 splits.
struct SplitPlan {
  int splits, kchunk;
};

SplitPlan split_plan(const Conv2dShape& s, int variant) {
  // 64-bit: K (< 2^31) rounded up to a multiple of 16 may be 2^31 itself
  const std::int64_t M = s.o, N = s.c * s.kh * s.kw, K = s.n * s.oh * s.ow;
  std::int64_t bm = 16, bn = 16;
  if (variant == kPipelinedVariant || variant == kMmaTf32Variant) {
    bm = pipelined_small_m(M) ? 32 : 128;
    bn = pipelined_small_m(M) ? 256 : 128;
  } else if (variant == 3 || variant == 4 || variant >= kStrideAwareVariant) {
    bm = small_m(M) ? 16 : 64;
    bn = small_m(M) ? 128 : 64;
  } else if (variant == kTf32Variant) {
    bm = bn = 64;
  }
  const std::int64_t tiles = ceil_div(M, bm) * ceil_div(N, bn);
  std::int64_t want = 256 / tiles;
  if (want < 1) want = 1;
  if (want > 64) want = 64;
  std::int64_t kchunk = ceil_div(K, want);
  if (kchunk < 64) kchunk = 64;
  kchunk = ceil_div<std::int64_t>(kchunk, 16) * 16;
  if (kchunk > INT_MAX - 15) kchunk = INT_MAX - 15;  // the largest multiple of 16 an int holds
  return {static_cast<int>(ceil_div(K, kchunk)), static_cast<int>(kchunk)};
}

}  // namespace

std::string tf32_arch_problem(int ptx_version, int compute_capability, int variant) {
  const auto cc = [](int v) { return std::to_string(v / 10) + "." + std::to_string(v % 10); };
  const std::string name = "conv2d: variant " + std::to_string(variant) + " (tf32)";
  if (compute_capability < 80)
    return name + " needs compute capability 8.0 or newer, this GPU has " + cc(compute_capability);
  if (ptx_version < 80)
    return name + " was compiled for compute capability " + cc(ptx_version) +
           " (its PTX, JIT-compiled for this " + cc(compute_capability) +
           " GPU), where its tensor-core body compiles out; rebuild with PYGAN_CUDA_ARCH including 80 or "
           "newer (the default is \"80;90\") to use it";
  return "";
}

std::string conv2d_tf32_problem() {
#if defined(PYGAN_EMULATION)
  return "";
#else
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    cudaGetLastError();  // not sticky: clear it
    return "conv2d: variant 9 (tf32) needs a CUDA device, and none is visible";
  }
  int device = 0, major = 0, minor = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device));
  cudaFuncAttributes attr{};
  auto kern = gemm_pipelined<ForwardProblem, 128, 128, true>;
  CUDA_CHECK(cudaFuncGetAttributes(&attr, reinterpret_cast<const void*>(kern)));
  return tf32_arch_problem(attr.ptxVersion, major * 10 + minor, kMmaTf32Variant);
#endif
}

std::vector<std::string> conv2d_variants() {
  return {"direct, one thread per output", "implicit GEMM, 16x16 shared-memory tiles, one output per thread",
          "implicit GEMM, 64x64 tiles (16x128 when M <= 16), 4x4 (1x8) register micro-tiles",
          "variant 3 with float4 (128-bit) global loads where contiguous and aligned",
          "tf32 tensor cores (wmma m16n16k8), 64x64 tiles; opt-in, looser tolerance, GPU only",
          "variant 3, with stride-aware backward-data: one dense GEMM per output phase, no structural zeros",
          "variant 6, and one block per output (a fixed-order block reduction over K) for small outputs, long K",
          "pipelined implicit GEMM, 128x128 tiles (32x256 when M <= 32), 8x8 register micro-tiles, float4 shared "
          "reads, two cp.async stages, backward-data by output phase (as variant 6)",
          "tf32 tensor cores (mma.sync m16n8k8) on variant 8's tiling; opt-in, looser tolerance, sm_80+"};
}

void conv2d_forward(const float* x, const float* w, const float* b, float* y, const Conv2dShape& s, int variant,
                    std::uintptr_t stream) {
  variant = resolve(variant);
  if (variant == kStrideAwareVariant) variant = 3;  // variant 7 keeps its number: launch_gemm decides
  check_dims(s);
  if (s.n * s.o * s.oh * s.ow == 0) return;
  const cudaStream_t st = stream_from(stream);
  if (variant == 1) {
    PYGAN_LAUNCH(forward_direct, grid_for(s.n * s.o * s.oh * s.ow), kBlock, 0, st, x, w, b, y, s);
    return;
  }
  const Dims d = dims_of(s);
  const ForwardProblem prob{x, w, b, y, d, d.o, d.n * d.oh * d.ow, d.c * d.kh * d.kw};
  if (prob.K == 0) {  // no input channels: y = bias (or 0)
    PYGAN_LAUNCH(forward_direct, grid_for(s.n * s.o * s.oh * s.ow), kBlock, 0, st, x, w, b, y, s);
    return;
  }
  launch_gemm(prob, variant, nullptr, 1, prob.K, st);
}

void conv2d_backward_data(const float* dy, const float* w, float* dx, const Conv2dShape& s, int variant,
                          std::uintptr_t stream) {
  variant = resolve(variant);
  check_dims(s);
  if (s.n * s.c * s.h * s.w == 0) return;
  const cudaStream_t st = stream_from(stream);
  if (variant == 1 || s.o * s.oh * s.ow == 0) {
    PYGAN_LAUNCH(backward_data_direct, grid_for(s.n * s.c * s.h * s.w), kBlock, 0, st, dy, w, dx, s);
    return;
  }
  const Dims d = dims_of(s);
  if (variant >= kStrideAwareVariant) {
    for (int rh = 0; rh < d.sh; ++rh)
      for (int rw = 0; rw < d.sw; ++rw) {
        // the first row (column) of the phase: the least h >= 0 with (h + ph) mod sh == rh
        const int h0 = ((rh - d.ph) % d.sh + d.sh) % d.sh, v0 = ((rw - d.pw) % d.sw + d.sw) % d.sw;
        const int hr = h0 < d.h ? ceil_div(d.h - h0, d.sh) : 0, wr = v0 < d.w ? ceil_div(d.w - v0, d.sw) : 0;
        const int khr = rh < d.kh ? ceil_div(d.kh - rh, d.sh) : 0, kwr = rw < d.kw ? ceil_div(d.kw - rw, d.sw) : 0;
        const BackwardDataPhaseProblem ph{dy, w, dx, d, rh, rw, h0, v0, hr, wr, khr, kwr,
                                          d.c, d.n * hr * wr, d.o * khr * kwr};
        if (ph.N == 0) continue;  // no output position in this phase (h < sh or w < sw)
        // K == 0 (no tap reaches the phase: kh < sh or kw < sw): dx = 0 there, written by variant 3's
        // GEMM; variants 8 and 9 decompose K positions over (khr, kwr) and have nothing to decompose
        launch_gemm(ph, ph.K == 0 ? 3 : variant, nullptr, 1, ph.K, st);
      }
    return;
  }
  const BackwardDataProblem prob{dy, w, dx, d, d.c, d.n * d.h * d.w, d.o * d.kh * d.kw};
  launch_gemm(prob, variant, nullptr, 1, prob.K, st);
}

std::int64_t conv2d_backward_weight_workspace_size(const Conv2dShape& s, int variant) {
  variant = resolve(variant);
  check_dims(s);
  if (variant == 1 || empty(s)) return 0;
  const SplitPlan plan = split_plan(s, variant);
  return plan.splits > 1 ? static_cast<std::int64_t>(plan.splits) * s.o * s.c * s.kh * s.kw : 0;
}

void conv2d_backward_weight(const float* x, const float* dy, float* dw, float* workspace, const Conv2dShape& s,
                            int variant, std::uintptr_t stream) {
  variant = resolve(variant);
  check_dims(s);
  const std::int64_t count = s.o * s.c * s.kh * s.kw;
  if (count == 0) return;
  const cudaStream_t st = stream_from(stream);
  if (empty(s)) {  // nothing to sum over: dw = 0
    CUDA_CHECK(cudaMemsetAsync(dw, 0, count * sizeof(float), st));
    return;
  }
  if (variant == 1) {
    PYGAN_LAUNCH(backward_weight_direct, grid_for(count), kBlock, 0, st, x, dy, dw, s);
    return;
  }
  if (variant == kStrideAwareVariant || variant == kSmallOutputVariant) variant = 3;  // their backward-weight is 3's
  const Dims d = dims_of(s);
  const BackwardWeightProblem prob{x, dy, dw, d, d.o, d.c * d.kh * d.kw, d.n * d.oh * d.ow};
  const SplitPlan plan = split_plan(s, variant);
  if (plan.splits > 1 && workspace == nullptr)
    throw std::invalid_argument("conv2d_backward_weight: this shape needs a workspace of " +
                                std::to_string(conv2d_backward_weight_workspace_size(s, variant)) + " floats");
  launch_gemm(prob, variant, workspace, plan.splits, plan.kchunk, st);
  if (plan.splits > 1) PYGAN_LAUNCH(sum_splits, grid_for(count), kBlock, 0, st, workspace, dw, count, plan.splits);
}

void conv2d_bias_backward(const float* dy, float* db, std::int64_t n, std::int64_t c, std::int64_t hw,
                          std::uintptr_t stream) {
  if (c == 0) return;
  if (n * hw == 0) {
    CUDA_CHECK(cudaMemsetAsync(db, 0, c * sizeof(float), stream_from(stream)));
    return;
  }
  PYGAN_LAUNCH(channel_sum, static_cast<unsigned>(c), kBlock, 0, stream_from(stream), dy, db, n, c, hw);
}

}  // namespace pygan
