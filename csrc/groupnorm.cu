// Group normalisation of an (N, C, M...) array seen as (N, C, M), M = prod(spatial), with G groups
// of C/G consecutive channels, as pygan/ops/reference.py group_norm_forward / group_norm_backward.
// A (sample, group) "row" is K = (C/G) * M values, contiguous in memory (row r = n*G + g starts at
// r*K). Layer norm over (C, H, W) with per-channel affine is G = 1; instance norm is G = C.
//   forward:  mean, biased var per row (two passes: mean, then sum of squared deviations),
//             rstd = 1/sqrt(var + eps) saved as (N, G); y = (x - mean) * rstd * gamma[c] + beta[c]
//             (gamma/beta may be null: affine=False)
//   backward: per row, with xhat = (x - mean) * rstd and g = dy * gamma[c] (dy without gamma):
//             dx = rstd * (g - mean(g) - xhat * mean(g * xhat));
//             per channel (when dgamma/dbeta are non-null): dgamma[c] = sum_{n,m} dy * xhat,
//             dbeta[c] = sum_{n,m} dy.
// Reductions: block_reduce_sum (common.cuh), fixed order for a given block size: deterministic,
// no atomics.
//
// Variants (launchers take `variant`; 0 picks the default):
//   1: one 256-thread block per (n, group) row for the forward and for dx, one 256-thread block per
//      channel for dgamma/dbeta; scalar loads (a plain port of the reference)
//   2: as 1, but 512 threads and float4 loads/stores when M % 4 == 0 and every pointer is 16-byte
//      aligned (scalar otherwise). DEFAULT, chosen without measurement: GPU timing is still owed.
//   3: one warp per row (8 rows per 256-thread block), warp-shuffle reductions only, the affine
//      map applied channel by channel (no division per element); for short rows such as instance
//      norm's H*W, where a whole block per row leaves most threads idle. dgamma/dbeta as in 1.
#include <cmath>

#include "common.cuh"
#include "launchers.h"

namespace pygan {
namespace {

// y for one row r = n*G + g: statistics over its K = cpg * M values. VEC: float4 path, indices
// count float4s (M % 4 == 0, so a float4 never straddles two channels).
template <bool VEC>
__global__ void gn_forward(const float* x, const float* gamma, const float* beta, float* y, float* mean_out,
                           float* rstd_out, std::int64_t G, std::int64_t cpg, std::int64_t M, float eps) {
  const std::int64_t r = blockIdx.x;
  const std::int64_t K = cpg * M;
  const std::int64_t Mv = VEC ? M / 4 : M, Kv = cpg * Mv;
  const std::int64_t c0 = (r % G) * cpg;  // first channel of the group
  const float* xr = x + r * K;
  float* yr = y + r * K;
  const float4* x4 = reinterpret_cast<const float4*>(xr);
  float4* y4 = reinterpret_cast<float4*>(yr);
  float acc = 0.0f;
  for (std::int64_t e = threadIdx.x; e < Kv; e += blockDim.x) {
    if constexpr (VEC) {
      const float4 v = x4[e];
      acc += (v.x + v.y) + (v.z + v.w);
    } else {
      acc += xr[e];
    }
  }
  const float mean = block_reduce_sum(acc) / static_cast<float>(K);
  acc = 0.0f;
  for (std::int64_t e = threadIdx.x; e < Kv; e += blockDim.x) {
    if constexpr (VEC) {
      const float4 v = x4[e];
      const float a = v.x - mean, b = v.y - mean, d = v.z - mean, f = v.w - mean;
      acc += (a * a + b * b) + (d * d + f * f);
    } else {
      const float d = xr[e] - mean;
      acc += d * d;
    }
  }
  const float var = block_reduce_sum(acc) / static_cast<float>(K);
  const float rstd = 1.0f / sqrtf(var + eps);
  if (threadIdx.x == 0) {
    mean_out[r] = mean;
    rstd_out[r] = rstd;
  }
  for (std::int64_t e = threadIdx.x; e < Kv; e += blockDim.x) {
    const std::int64_t c = c0 + e / Mv;
    const float scale = gamma ? rstd * gamma[c] : rstd;
    const float shift = beta ? beta[c] : 0.0f;
    if constexpr (VEC) {
      const float4 v = x4[e];
      y4[e] = make_float4((v.x - mean) * scale + shift, (v.y - mean) * scale + shift, (v.z - mean) * scale + shift,
                          (v.w - mean) * scale + shift);
    } else {
      yr[e] = (xr[e] - mean) * scale + shift;
    }
  }
}

// dx for one row r = n*G + g.
template <bool VEC>
__global__ void gn_backward_dx(const float* x, const float* gamma, const float* dy, const float* mean_in,
                               const float* rstd_in, float* dx, std::int64_t G, std::int64_t cpg, std::int64_t M) {
  const std::int64_t r = blockIdx.x;
  const std::int64_t K = cpg * M;
  const std::int64_t Mv = VEC ? M / 4 : M, Kv = cpg * Mv;
  const std::int64_t c0 = (r % G) * cpg;
  const float* xr = x + r * K;
  const float* dyr = dy + r * K;
  float* dxr = dx + r * K;
  const float4* x4 = reinterpret_cast<const float4*>(xr);
  const float4* dy4 = reinterpret_cast<const float4*>(dyr);
  float4* dx4 = reinterpret_cast<float4*>(dxr);
  const float mean = mean_in[r], rstd = rstd_in[r];
  float sg = 0.0f, sgx = 0.0f;  // sum g, sum g * (x - mean)
  for (std::int64_t e = threadIdx.x; e < Kv; e += blockDim.x) {
    const float gm = gamma ? gamma[c0 + e / Mv] : 1.0f;
    if constexpr (VEC) {
      const float4 v = x4[e], d = dy4[e];
      const float ga = d.x * gm, gb = d.y * gm, gc = d.z * gm, gd = d.w * gm;
      sg += (ga + gb) + (gc + gd);
      sgx += (ga * (v.x - mean) + gb * (v.y - mean)) + (gc * (v.z - mean) + gd * (v.w - mean));
    } else {
      const float gv = dyr[e] * gm;
      sg += gv;
      sgx += gv * (xr[e] - mean);
    }
  }
  const float inv = 1.0f / static_cast<float>(K);
  const float k1 = block_reduce_sum(sg) * inv;                       // mean(g)
  const float k2 = block_reduce_sum(sgx) * rstd * rstd * inv;        // mean(g * xhat) * rstd
  for (std::int64_t e = threadIdx.x; e < Kv; e += blockDim.x) {
    const float gm = gamma ? gamma[c0 + e / Mv] : 1.0f;
    if constexpr (VEC) {
      const float4 v = x4[e], d = dy4[e];
      dx4[e] = make_float4(rstd * (d.x * gm - k1 - (v.x - mean) * k2), rstd * (d.y * gm - k1 - (v.y - mean) * k2),
                           rstd * (d.z * gm - k1 - (v.z - mean) * k2), rstd * (d.w * gm - k1 - (v.w - mean) * k2));
    } else {
      dxr[e] = rstd * (dyr[e] * gm - k1 - (xr[e] - mean) * k2);
    }
  }
}

// dgamma[c], dbeta[c] for one channel c: sums over the N samples and M positions.
template <bool VEC>
__global__ void gn_backward_affine(const float* x, const float* dy, const float* mean_in, const float* rstd_in,
                                   float* dgamma, float* dbeta, std::int64_t N, std::int64_t C, std::int64_t G,
                                   std::int64_t M) {
  const std::int64_t c = blockIdx.x;
  const std::int64_t g = c / (C / G);
  const std::int64_t Mv = VEC ? M / 4 : M, cntv = N * Mv;
  const float4* x4 = reinterpret_cast<const float4*>(x);
  const float4* dy4 = reinterpret_cast<const float4*>(dy);
  float sdy = 0.0f, sdyx = 0.0f;  // sum dy, sum dy * xhat
  for (std::int64_t e = threadIdx.x; e < cntv; e += blockDim.x) {
    const std::int64_t n = e / Mv;
    const std::int64_t i = (n * C + c) * Mv + (e - n * Mv);
    const float mean = mean_in[n * G + g], rstd = rstd_in[n * G + g];
    if constexpr (VEC) {
      const float4 v = x4[i], d = dy4[i];
      sdy += (d.x + d.y) + (d.z + d.w);
      sdyx += ((d.x * (v.x - mean) + d.y * (v.y - mean)) + (d.z * (v.z - mean) + d.w * (v.w - mean))) * rstd;
    } else {
      const float d = dy[i];
      sdy += d;
      sdyx += d * (x[i] - mean) * rstd;
    }
  }
  sdy = block_reduce_sum(sdy);
  sdyx = block_reduce_sum(sdyx);
  if (threadIdx.x == 0) {
    if (dgamma) dgamma[c] = sdyx;
    if (dbeta) dbeta[c] = sdy;
  }
}

// Variant 3: one warp per row r = blockIdx.x * (blockDim.x / 32) + warp. Whole warps past the last
// row return together, so every shuffle has its full warp.
__global__ void gn_forward_warp(const float* x, const float* gamma, const float* beta, float* y, float* mean_out,
                                float* rstd_out, std::int64_t rows, std::int64_t G, std::int64_t cpg, std::int64_t M,
                                float eps) {
  const std::int64_t r = static_cast<std::int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  if (r >= rows) return;
  const int lane = threadIdx.x % 32;
  const std::int64_t K = cpg * M, c0 = (r % G) * cpg;
  const float* xr = x + r * K;
  float* yr = y + r * K;
  float acc = 0.0f;
  for (std::int64_t e = lane; e < K; e += 32) acc += xr[e];
  const float mean = warp_reduce_sum(acc) / static_cast<float>(K);
  acc = 0.0f;
  for (std::int64_t e = lane; e < K; e += 32) {
    const float d = xr[e] - mean;
    acc += d * d;
  }
  const float rstd = 1.0f / sqrtf(warp_reduce_sum(acc) / static_cast<float>(K) + eps);
  if (lane == 0) {
    mean_out[r] = mean;
    rstd_out[r] = rstd;
  }
  for (std::int64_t cl = 0; cl < cpg; ++cl) {
    const float scale = gamma ? rstd * gamma[c0 + cl] : rstd;
    const float shift = beta ? beta[c0 + cl] : 0.0f;
    for (std::int64_t m = lane; m < M; m += 32) yr[cl * M + m] = (xr[cl * M + m] - mean) * scale + shift;
  }
}

__global__ void gn_backward_dx_warp(const float* x, const float* gamma, const float* dy, const float* mean_in,
                                    const float* rstd_in, float* dx, std::int64_t rows, std::int64_t G,
                                    std::int64_t cpg, std::int64_t M) {
  const std::int64_t r = static_cast<std::int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  if (r >= rows) return;
  const int lane = threadIdx.x % 32;
  const std::int64_t K = cpg * M, c0 = (r % G) * cpg;
  const float* xr = x + r * K;
  const float* dyr = dy + r * K;
  float* dxr = dx + r * K;
  const float mean = mean_in[r], rstd = rstd_in[r];
  float sg = 0.0f, sgx = 0.0f;
  for (std::int64_t cl = 0; cl < cpg; ++cl) {
    const float gm = gamma ? gamma[c0 + cl] : 1.0f;
    for (std::int64_t m = lane; m < M; m += 32) {
      const float gv = dyr[cl * M + m] * gm;
      sg += gv;
      sgx += gv * (xr[cl * M + m] - mean);
    }
  }
  const float inv = 1.0f / static_cast<float>(K);
  const float k1 = warp_reduce_sum(sg) * inv;
  const float k2 = warp_reduce_sum(sgx) * rstd * rstd * inv;
  for (std::int64_t cl = 0; cl < cpg; ++cl) {
    const float gm = gamma ? gamma[c0 + cl] : 1.0f;
    for (std::int64_t m = lane; m < M; m += 32) {
      const std::int64_t i = cl * M + m;
      dxr[i] = rstd * (dyr[i] * gm - k1 - (xr[i] - mean) * k2);
    }
  }
}

constexpr int kWarpRowsBlock = 256;  // variant 3: 8 rows per block

int resolve(int variant) {
  if (variant == 0) variant = 2;
  check_variant(variant, 3, "group_norm");
  return variant;
}

void check_sizes(const char* op, std::int64_t n, std::int64_t c, std::int64_t m, std::int64_t groups) {
  if (n < 0 || c < 1 || m < 1 || groups < 1 || c % groups != 0)
    throw std::invalid_argument(std::string(op) + ": bad sizes (need n >= 0, m >= 1, groups >= 1 dividing c)");
  if (n * groups > 0x7fffffff || c > 0x7fffffff) throw std::invalid_argument(std::string(op) + ": too many rows");
}

// float4 loads: variant 2, when the rows and pointers allow them
bool use_vec(int variant, std::int64_t M, std::initializer_list<const void*> ptrs) {
  return variant == 2 && float4_rows_ok(M, ptrs);
}

}  // namespace

std::vector<std::string> group_norm_variants() {
  return {"one 256-thread block per (sample, group) row, per-channel dgamma/dbeta blocks, scalar",
          "as 1 with 512 threads, float4 loads when M % 4 == 0 and aligned",
          "one warp per (sample, group) row, 8 rows per block, scalar (short rows: instance norm)"};
}

void group_norm_forward(const float* x, const float* gamma, const float* beta, float* y, float* mean, float* rstd,
                        std::int64_t n, std::int64_t c, std::int64_t m, std::int64_t groups, float eps, int variant,
                        std::uintptr_t stream) {
  variant = resolve(variant);
  check_sizes("group_norm_forward", n, c, m, groups);
  if (!(eps > 0.0f)) throw std::invalid_argument("group_norm_forward: eps must be positive");
  if (n == 0) return;
  const cudaStream_t st = stream_from(stream);
  const int block = variant == 2 ? 512 : 256;
  const unsigned rows = static_cast<unsigned>(n * groups);
  const std::int64_t cpg = c / groups;
  if (variant == 3) {
    const unsigned blocks = static_cast<unsigned>(ceil_div<std::int64_t>(rows, kWarpRowsBlock / 32));
    PYGAN_LAUNCH(gn_forward_warp, blocks, kWarpRowsBlock, 0, st, x, gamma, beta, y, mean, rstd,
                 static_cast<std::int64_t>(rows), groups, cpg, m, eps);
  } else if (use_vec(variant, m, {x, y})) {
    auto kern = gn_forward<true>;
    PYGAN_LAUNCH(kern, rows, block, 0, st, x, gamma, beta, y, mean, rstd, groups, cpg, m, eps);
  } else {
    auto kern = gn_forward<false>;
    PYGAN_LAUNCH(kern, rows, block, 0, st, x, gamma, beta, y, mean, rstd, groups, cpg, m, eps);
  }
}

void group_norm_backward(const float* x, const float* gamma, const float* dy, const float* mean, const float* rstd,
                         float* dx, float* dgamma, float* dbeta, std::int64_t n, std::int64_t c, std::int64_t m,
                         std::int64_t groups, int variant, std::uintptr_t stream) {
  variant = resolve(variant);
  check_sizes("group_norm_backward", n, c, m, groups);
  const cudaStream_t st = stream_from(stream);
  const int block = variant == 2 ? 512 : 256;  // dgamma/dbeta: variant 3 uses variant 1's kernel
  const std::int64_t cpg = c / groups;
  const bool vec = use_vec(variant, m, {x, dy, dx});
  if (n > 0) {
    const unsigned rows = static_cast<unsigned>(n * groups);
    if (variant == 3) {
      const unsigned blocks = static_cast<unsigned>(ceil_div<std::int64_t>(rows, kWarpRowsBlock / 32));
      PYGAN_LAUNCH(gn_backward_dx_warp, blocks, kWarpRowsBlock, 0, st, x, gamma, dy, mean, rstd, dx,
                   static_cast<std::int64_t>(rows), groups, cpg, m);
    } else if (vec) {
      auto kern = gn_backward_dx<true>;
      PYGAN_LAUNCH(kern, rows, block, 0, st, x, gamma, dy, mean, rstd, dx, groups, cpg, m);
    } else {
      auto kern = gn_backward_dx<false>;
      PYGAN_LAUNCH(kern, rows, block, 0, st, x, gamma, dy, mean, rstd, dx, groups, cpg, m);
    }
  }
  if (!dgamma && !dbeta) return;
  // an empty batch still has gradients for gamma and beta: zeros (the reductions run over nothing)
  if (vec) {
    auto kern = gn_backward_affine<true>;
    PYGAN_LAUNCH(kern, static_cast<unsigned>(c), block, 0, st, x, dy, mean, rstd, dgamma, dbeta, n, c, groups, m);
  } else {
    auto kern = gn_backward_affine<false>;
    PYGAN_LAUNCH(kern, static_cast<unsigned>(c), block, 0, st, x, dy, mean, rstd, dgamma, dbeta, n, c, groups, m);
  }
}

}  // namespace pygan
