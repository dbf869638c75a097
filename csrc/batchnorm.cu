// Batch normalisation over axis 1 of an (N, C, M...) array seen as (N, C, M), M = prod(spatial),
// as pygan/ops/reference.py batch_norm_forward / batch_norm_backward, optionally fused with a
// leaky ReLU (slope 0 = ReLU) applied after the affine map:
//   training forward: mean, biased var per channel (two passes: mean, then sum of squared
//                     deviations), rstd = 1/sqrt(var + eps) saved; running stats (if given) updated
//                     in place: running = (1 - momentum) * running + momentum * stat, with the
//                     UNBIASED variance var * cnt / (cnt - 1) for running_var;
//   eval forward:     mean = running_mean, rstd = 1/sqrt(running_var + eps) (also written out);
//   y = act((x - mean) * rstd * gamma + beta)      gamma/beta may be null (affine=False)
//   backward:         g = dy * act'(z) (z the pre-activation, recomputed from x), then
//                     dbeta = sum g, dgamma = sum g * xhat; training:
//                     dx = gamma * rstd * (g - dbeta/cnt - xhat * dgamma/cnt); eval: dx = g * gamma * rstd.
//                     dgamma/dbeta are written only when their pointers are non-null.
// Reductions: warp shuffles then one shared-memory step (block_reduce_sum in common.cuh); a
// fixed order for a given block size, so results are deterministic.
//
// Variants (launchers take `variant`; 0 picks the default):
//   1: one 256-thread block per channel, scalar loads, three passes over the channel's data
//      (a plain port of the reference)
//   2: as 1, but 512 threads and float4 loads/stores when M % 4 == 0 and every pointer is
//      16-byte aligned (falls back to scalar otherwise). DEFAULT, chosen without measurement:
//      GPU timing is still owed (no GPU on the CI machine).
//   3: several blocks per channel (issue 13): P = batch_norm_plan parts per channel, sized from the
//      element count so that a layer of few channels still fills a ~132-SM GPU; each block writes
//      partial statistics to a workspace (batch_norm_workspace_size floats), one thread per channel
//      merges them in a fixed order (Chan's formula on per-block count/mean/M2, in double: no
//      E[x^2] - E[x]^2 cancellation, no atomics, bitwise reproducible), then an elementwise kernel
//      over the whole tensor normalises (channel and column tracked by additions, no 64-bit divide
//      per element). Backward likewise: partial sum(g) and sum(g * (x - mean)), merge, elementwise
//      dx. float4 loads as in 2. x is read twice forward (the second time mostly from L2), twice
//      backward. Not the default: untimed (no GPU).
#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "common.cuh"
#include "launchers.h"

namespace pygan {
namespace {

__device__ __forceinline__ float apply_act(float z, int act, float slope) {
  return act == kBnLeakyRelu ? (z > 0.0f ? z : z * slope) : z;
}

__device__ __forceinline__ float act_grad(float z, float g, int act, float slope) {
  return act == kBnLeakyRelu ? (z > 0.0f ? g : g * slope) : g;
}

// act((v - mean) * scale + shift) for the four lanes of a float4 (variants 2 and 3)
__device__ __forceinline__ float4 normalise4(float4 v, float mean, float scale, float shift, int act, float slope) {
  return make_float4(apply_act((v.x - mean) * scale + shift, act, slope), apply_act((v.y - mean) * scale + shift, act, slope),
                     apply_act((v.z - mean) * scale + shift, act, slope), apply_act((v.w - mean) * scale + shift, act, slope));
}

// Index of element e (0 <= e < N*M) of channel c.
__device__ __forceinline__ std::int64_t at(std::int64_t e, std::int64_t c, std::int64_t C, std::int64_t M) {
  const std::int64_t n = e / M;
  return (n * C + c) * M + (e - n * M);
}

// Per-channel statistics plus the normalised output; one block per channel. VEC: float4 path
// (M % 4 == 0, pointers aligned), index e counts float4s within the channel.
template <bool VEC>
__global__ void bn_forward(const float* x, const float* gamma, const float* beta, float* running_mean,
                           float* running_var, float* y, float* mean_out, float* rstd_out, std::int64_t N,
                           std::int64_t C, std::int64_t M, int training, float momentum, float eps, int act,
                           float slope) {
  const std::int64_t c = blockIdx.x;
  const std::int64_t cnt = N * M;
  const std::int64_t Mv = VEC ? M / 4 : M, cntv = N * Mv;
  const float4* x4 = reinterpret_cast<const float4*>(x);
  float4* y4 = reinterpret_cast<float4*>(y);
  PYGAN_SHARED(float, s_mean, );
  PYGAN_SHARED(float, s_rstd, );
  if (training) {
    float acc = 0.0f;
    for (std::int64_t e = threadIdx.x; e < cntv; e += blockDim.x) {
      if constexpr (VEC) {
        const float4 v = x4[at(e, c, C, Mv)];
        acc += (v.x + v.y) + (v.z + v.w);
      } else {
        acc += x[at(e, c, C, M)];
      }
    }
    const float mean = block_reduce_sum(acc) / static_cast<float>(cnt);
    acc = 0.0f;
    for (std::int64_t e = threadIdx.x; e < cntv; e += blockDim.x) {
      if constexpr (VEC) {
        const float4 v = x4[at(e, c, C, Mv)];
        const float a = v.x - mean, b = v.y - mean, d = v.z - mean, f = v.w - mean;
        acc += (a * a + b * b) + (d * d + f * f);
      } else {
        const float d = x[at(e, c, C, M)] - mean;
        acc += d * d;
      }
    }
    const float var = block_reduce_sum(acc) / static_cast<float>(cnt);
    if (threadIdx.x == 0) {
      s_mean = mean;
      s_rstd = 1.0f / sqrtf(var + eps);
      mean_out[c] = mean;
      rstd_out[c] = s_rstd;
      if (running_mean) running_mean[c] = (1.0f - momentum) * running_mean[c] + momentum * mean;
      if (running_var) {
        const float unbiased = var * static_cast<float>(static_cast<double>(cnt) / static_cast<double>(cnt - 1));
        running_var[c] = (1.0f - momentum) * running_var[c] + momentum * unbiased;
      }
    }
  } else if (threadIdx.x == 0) {
    s_mean = running_mean[c];
    s_rstd = 1.0f / sqrtf(running_var[c] + eps);
    mean_out[c] = s_mean;
    rstd_out[c] = s_rstd;
  }
  __syncthreads();
  const float mean = s_mean, rstd = s_rstd;
  const float scale = gamma ? rstd * gamma[c] : rstd;
  const float shift = beta ? beta[c] : 0.0f;
  for (std::int64_t e = threadIdx.x; e < cntv; e += blockDim.x) {
    if constexpr (VEC) {
      const std::int64_t i = at(e, c, C, Mv);
      const float4 v = x4[i];
      y4[i] = normalise4(v, mean, scale, shift, act, slope);
    } else {
      const std::int64_t i = at(e, c, C, M);
      y[i] = apply_act((x[i] - mean) * scale + shift, act, slope);
    }
  }
}

template <bool VEC>
__global__ void bn_backward(const float* x, const float* gamma, const float* beta, const float* dy,
                            const float* mean_in, const float* rstd_in, float* dx, float* dgamma, float* dbeta,
                            std::int64_t N, std::int64_t C, std::int64_t M, int training, int act, float slope) {
  const std::int64_t c = blockIdx.x;
  const std::int64_t cnt = N * M;
  const std::int64_t Mv = VEC ? M / 4 : M, cntv = N * Mv;
  const float4* x4 = reinterpret_cast<const float4*>(x);
  const float4* dy4 = reinterpret_cast<const float4*>(dy);
  float4* dx4 = reinterpret_cast<float4*>(dx);
  const float mean = mean_in[c], rstd = rstd_in[c];
  const float g = gamma ? gamma[c] : 1.0f;
  const float scale = rstd * g, shift = beta ? beta[c] : 0.0f;
  // pre-activation z = xhat * gamma + beta; only its sign matters (act' of a leaky ReLU)
  auto grad = [&](float xv, float d) { return act_grad((xv - mean) * scale + shift, d, act, slope); };
  float sdy = 0.0f, sdyx = 0.0f;
  for (std::int64_t e = threadIdx.x; e < cntv; e += blockDim.x) {
    if constexpr (VEC) {
      const std::int64_t i = at(e, c, C, Mv);
      const float4 v = x4[i], d = dy4[i];
      const float ga = grad(v.x, d.x), gb = grad(v.y, d.y), gc = grad(v.z, d.z), gd = grad(v.w, d.w);
      sdy += (ga + gb) + (gc + gd);
      sdyx += (ga * (v.x - mean) + gb * (v.y - mean)) + (gc * (v.z - mean) + gd * (v.w - mean));
    } else {
      const std::int64_t i = at(e, c, C, M);
      const float xv = x[i], gv = grad(xv, dy[i]);
      sdy += gv;
      sdyx += gv * (xv - mean);
    }
  }
  sdy = block_reduce_sum(sdy);
  sdyx = block_reduce_sum(sdyx) * rstd;  // sum g * xhat
  if (threadIdx.x == 0) {
    if (dgamma) dgamma[c] = sdyx;
    if (dbeta) dbeta[c] = sdy;
  }
  const float inv = 1.0f / static_cast<float>(cnt);
  const float k1 = training ? scale * sdy * inv : 0.0f;            // scale * mean(g)
  const float k2 = training ? scale * rstd * sdyx * inv : 0.0f;   // scale * rstd * mean(g * xhat)
  for (std::int64_t e = threadIdx.x; e < cntv; e += blockDim.x) {
    if constexpr (VEC) {
      const std::int64_t i = at(e, c, C, Mv);
      const float4 v = x4[i], d = dy4[i];
      dx4[i] = make_float4(grad(v.x, d.x) * scale - (v.x - mean) * k2 - k1,
                           grad(v.y, d.y) * scale - (v.y - mean) * k2 - k1,
                           grad(v.z, d.z) * scale - (v.z - mean) * k2 - k1,
                           grad(v.w, d.w) * scale - (v.w - mean) * k2 - k1);
    } else {
      const std::int64_t i = at(e, c, C, M);
      const float xv = x[i];
      dx[i] = grad(xv, dy[i]) * scale - (xv - mean) * k2 - k1;
    }
  }
}

// ---- variant 3: several blocks per channel -------------------------------------------------------
constexpr int kV3Threads = 256;
// Blocks the statistics kernels aim for (~8 resident 256-thread blocks on each of ~132 SMs), and
// the fewest floats one block takes (8 per thread): fewer parts when the channels are short.
constexpr std::int64_t kV3FillBlocks = 1024, kV3MinPart = 2048;
constexpr std::int64_t kV3TableStride = 8;  // floats of the per-channel coefficient table
constexpr unsigned kV3MaxElementwiseBlocks = 1u << 16;

// The first element (of cntv) of part p of P: balanced, every part non-empty when cntv >= P.
__host__ __device__ __forceinline__ std::int64_t part_begin(std::int64_t p, std::int64_t cntv, std::int64_t P) {
  return p * (cntv / P) + (p < cntv % P ? p : cntv % P);
}

// Walks the elements e, e + step, e + 2 step, ... of channel c of an (N, C, Mv) array: the flat
// index and the column are advanced by additions; one divide when the walk starts.
struct ChannelWalk {
  std::int64_t i, m, row_jump, wrap, step_cols, Mv;
  __device__ __forceinline__ ChannelWalk(std::int64_t e, std::int64_t c, std::int64_t C, std::int64_t Mv_,
                                         std::int64_t step)
      : Mv(Mv_) {
    const std::int64_t n = e / Mv;
    m = e - n * Mv;
    i = (n * C + c) * Mv + m;
    const std::int64_t step_rows = step / Mv;
    step_cols = step - step_rows * Mv;
    row_jump = step_rows * C * Mv + step_cols;
    wrap = (C - 1) * Mv;
  }
  __device__ __forceinline__ void next() {
    m += step_cols;
    i += row_jump;
    if (m >= Mv) {
      m -= Mv;
      i += wrap;
    }
  }
};

// One block per (channel, part): the part's mean (shifted by the channel's first value, so that a
// large common offset costs no precision in the sum) and its sum of squared deviations M2.
template <bool VEC>
__global__ void bn3_partial_stats(const float* x, float* partials, std::int64_t N, std::int64_t C, std::int64_t Mv,
                                  std::int64_t P) {
  const std::int64_t c = blockIdx.x / P, p = blockIdx.x - c * P;
  const std::int64_t cntv = N * Mv, e0 = part_begin(p, cntv, P), e1 = part_begin(p + 1, cntv, P);
  const float4* x4 = reinterpret_cast<const float4*>(x);
  const float shift = e1 > e0 ? x[c * Mv * (VEC ? 4 : 1)] : 0.0f;  // element (0, c, 0)
  float acc = 0.0f;
  if (e0 + threadIdx.x < e1) {
    ChannelWalk w(e0 + threadIdx.x, c, C, Mv, blockDim.x);
    for (std::int64_t e = e0 + threadIdx.x; e < e1; e += blockDim.x, w.next()) {
      if constexpr (VEC) {
        const float4 v = x4[w.i];
        acc += ((v.x - shift) + (v.y - shift)) + ((v.z - shift) + (v.w - shift));
      } else {
        acc += x[w.i] - shift;
      }
    }
  }
  const float count = static_cast<float>((e1 - e0) * (VEC ? 4 : 1));
  const float total = block_reduce_sum(acc);
  const float mean = e1 > e0 ? shift + total / count : 0.0f;
  acc = 0.0f;
  if (e0 + threadIdx.x < e1) {
    ChannelWalk w(e0 + threadIdx.x, c, C, Mv, blockDim.x);
    for (std::int64_t e = e0 + threadIdx.x; e < e1; e += blockDim.x, w.next()) {
      if constexpr (VEC) {
        const float4 v = x4[w.i];
        const float a = v.x - mean, b = v.y - mean, d = v.z - mean, f = v.w - mean;
        acc += (a * a + b * b) + (d * d + f * f);
      } else {
        const float d = x[w.i] - mean;
        acc += d * d;
      }
    }
  }
  const float m2 = block_reduce_sum(acc);
  if (threadIdx.x == 0) {
    partials[2 * blockIdx.x] = mean;
    partials[2 * blockIdx.x + 1] = m2;
  }
}

__device__ __forceinline__ void write_table(float* row, float mean, float scale, float shift, float k1, float k2) {
  row[0] = mean, row[1] = scale, row[2] = shift, row[3] = k1, row[4] = k2;
  row[5] = row[6] = row[7] = 0.0f;  // padding: the whole workspace is written
}

// One thread per channel: the parts' (count, mean, M2) merged in order p = 0, 1, ... (Chan et al.),
// in double; or, in evaluation, the running statistics. Writes mean/rstd, updates the running
// statistics, and fills the channel's row of the coefficient table the elementwise kernel reads.
__global__ void bn3_combine_stats(const float* partials, float* table, const float* gamma, const float* beta,
                                  float* running_mean, float* running_var, float* mean_out, float* rstd_out,
                                  std::int64_t C, std::int64_t P, std::int64_t cntv, int width, int training,
                                  float momentum, float eps) {
  const std::int64_t c = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= C) return;
  float mean, rstd;
  if (training) {
    double n_a = 0.0, mean_a = 0.0, m2_a = 0.0;
    for (std::int64_t p = 0; p < P; ++p) {
      const double n_b = static_cast<double>((part_begin(p + 1, cntv, P) - part_begin(p, cntv, P)) * width);
      if (n_b == 0.0) continue;
      const double mean_b = partials[2 * (c * P + p)], m2_b = partials[2 * (c * P + p) + 1];
      const double n = n_a + n_b, delta = mean_b - mean_a;
      mean_a += delta * (n_b / n);
      m2_a += m2_b + delta * delta * (n_a * n_b / n);
      n_a = n;
    }
    const float var = static_cast<float>(m2_a / n_a);
    mean = static_cast<float>(mean_a);
    rstd = 1.0f / sqrtf(var + eps);
    if (running_mean) running_mean[c] = (1.0f - momentum) * running_mean[c] + momentum * mean;
    if (running_var) {
      const float unbiased = var * static_cast<float>(n_a / (n_a - 1.0));
      running_var[c] = (1.0f - momentum) * running_var[c] + momentum * unbiased;
    }
  } else {
    mean = running_mean[c];
    rstd = 1.0f / sqrtf(running_var[c] + eps);
  }
  mean_out[c] = mean;
  rstd_out[c] = rstd;
  write_table(table + kV3TableStride * c, mean, gamma ? rstd * gamma[c] : rstd, beta ? beta[c] : 0.0f, 0.0f, 0.0f);
}

// Elementwise over all N*C*Mv elements (grid-stride): the element's column m and channel c are
// tracked by additions (step_cols = stride % Mv, step_chans = (stride / Mv) % C).
struct ElementWalk {
  std::int64_t m, c, Mv, C, step_cols, step_chans;
  __device__ __forceinline__ ElementWalk(std::int64_t i, std::int64_t Mv_, std::int64_t C_, std::int64_t sc,
                                         std::int64_t sch)
      : Mv(Mv_), C(C_), step_cols(sc), step_chans(sch) {
    const std::int64_t row = i / Mv;
    m = i - row * Mv;
    c = row % C;
  }
  __device__ __forceinline__ void next() {
    m += step_cols;
    c += step_chans;
    if (m >= Mv) {
      m -= Mv;
      ++c;
    }
    if (c >= C) c -= C;
  }
};

template <bool VEC>
__global__ void bn3_normalise(const float* x, const float* table, float* y, std::int64_t total_v, std::int64_t C,
                              std::int64_t Mv, std::int64_t step_cols, std::int64_t step_chans, int act, float slope) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= total_v) return;
  const float4* x4 = reinterpret_cast<const float4*>(x);
  float4* y4 = reinterpret_cast<float4*>(y);
  for (ElementWalk w(i, Mv, C, step_cols, step_chans); i < total_v; i += stride, w.next()) {
    const float* row = table + kV3TableStride * w.c;
    const float mean = row[0], scale = row[1], shift = row[2];
    if constexpr (VEC) {
      const float4 v = x4[i];
      y4[i] = normalise4(v, mean, scale, shift, act, slope);
    } else {
      y[i] = apply_act((x[i] - mean) * scale + shift, act, slope);
    }
  }
}

// One block per (channel, part): partial sum(g) and sum(g * (x - mean)), g = dy * act'(z).
template <bool VEC>
__global__ void bn3_partial_grads(const float* x, const float* gamma, const float* beta, const float* dy,
                                  const float* mean_in, const float* rstd_in, float* partials, std::int64_t N,
                                  std::int64_t C, std::int64_t Mv, std::int64_t P, int act, float slope) {
  const std::int64_t c = blockIdx.x / P, p = blockIdx.x - c * P;
  const std::int64_t cntv = N * Mv, e0 = part_begin(p, cntv, P), e1 = part_begin(p + 1, cntv, P);
  const float4* x4 = reinterpret_cast<const float4*>(x);
  const float4* dy4 = reinterpret_cast<const float4*>(dy);
  const float mean = mean_in[c], scale = rstd_in[c] * (gamma ? gamma[c] : 1.0f), shift = beta ? beta[c] : 0.0f;
  auto grad = [&](float xv, float d) { return act_grad((xv - mean) * scale + shift, d, act, slope); };
  float sdy = 0.0f, sdyx = 0.0f;
  if (e0 + threadIdx.x < e1) {
    ChannelWalk w(e0 + threadIdx.x, c, C, Mv, blockDim.x);
    for (std::int64_t e = e0 + threadIdx.x; e < e1; e += blockDim.x, w.next()) {
      if constexpr (VEC) {
        const float4 v = x4[w.i], d = dy4[w.i];
        const float ga = grad(v.x, d.x), gb = grad(v.y, d.y), gc = grad(v.z, d.z), gd = grad(v.w, d.w);
        sdy += (ga + gb) + (gc + gd);
        sdyx += (ga * (v.x - mean) + gb * (v.y - mean)) + (gc * (v.z - mean) + gd * (v.w - mean));
      } else {
        const float xv = x[w.i], gv = grad(xv, dy[w.i]);
        sdy += gv;
        sdyx += gv * (xv - mean);
      }
    }
  }
  sdy = block_reduce_sum(sdy);
  sdyx = block_reduce_sum(sdyx);
  if (threadIdx.x == 0) {
    partials[2 * blockIdx.x] = sdy;
    partials[2 * blockIdx.x + 1] = sdyx;
  }
}

// One thread per channel: the parts' sums added in order (double), dgamma/dbeta, and the table row
// (mean, scale, shift, k1, k2) of dx = g * scale - (x - mean) * k2 - k1.
__global__ void bn3_combine_grads(const float* partials, float* table, const float* gamma, const float* beta,
                                  const float* mean_in, const float* rstd_in, float* dgamma, float* dbeta,
                                  std::int64_t C, std::int64_t P, std::int64_t cnt, int training) {
  const std::int64_t c = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= C) return;
  double sum_g = 0.0, sum_gx = 0.0;
  for (std::int64_t p = 0; p < P; ++p) {
    sum_g += partials[2 * (c * P + p)];
    sum_gx += partials[2 * (c * P + p) + 1];
  }
  const float rstd = rstd_in[c], scale = rstd * (gamma ? gamma[c] : 1.0f);
  const float sdy = static_cast<float>(sum_g), sdyx = static_cast<float>(sum_gx) * rstd;  // sum g * xhat
  if (dgamma) dgamma[c] = sdyx;
  if (dbeta) dbeta[c] = sdy;
  const float inv = 1.0f / static_cast<float>(cnt);
  const float k1 = training ? scale * sdy * inv : 0.0f;
  const float k2 = training ? scale * rstd * sdyx * inv : 0.0f;
  write_table(table + kV3TableStride * c, mean_in[c], scale, beta ? beta[c] : 0.0f, k1, k2);
}

template <bool VEC>
__global__ void bn3_input_grad(const float* x, const float* dy, const float* table, float* dx, std::int64_t total_v,
                               std::int64_t C, std::int64_t Mv, std::int64_t step_cols, std::int64_t step_chans,
                               int act, float slope) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= total_v) return;
  const float4* x4 = reinterpret_cast<const float4*>(x);
  const float4* dy4 = reinterpret_cast<const float4*>(dy);
  float4* dx4 = reinterpret_cast<float4*>(dx);
  for (ElementWalk w(i, Mv, C, step_cols, step_chans); i < total_v; i += stride, w.next()) {
    const float* row = table + kV3TableStride * w.c;
    const float mean = row[0], scale = row[1], shift = row[2], k1 = row[3], k2 = row[4];
    auto dxv = [&](float xv, float d) {
      return act_grad((xv - mean) * scale + shift, d, act, slope) * scale - (xv - mean) * k2 - k1;
    };
    if constexpr (VEC) {
      const float4 v = x4[i], d = dy4[i];
      dx4[i] = make_float4(dxv(v.x, d.x), dxv(v.y, d.y), dxv(v.z, d.z), dxv(v.w, d.w));
    } else {
      dx[i] = dxv(x[i], dy[i]);
    }
  }
}

// Parts per channel of variant 3 for a channel of cnt values.
std::int64_t v3_parts(std::int64_t c, std::int64_t cnt) {
  const std::int64_t fill = c > 0 ? ceil_div(kV3FillBlocks, c) : 1;
  const std::int64_t by_size = cnt / kV3MinPart;
  return std::max<std::int64_t>(1, std::min(fill, by_size));
}

// The elementwise kernels' grid and the walk's steps for it.
struct ElementwisePlan {
  unsigned blocks;
  std::int64_t step_cols, step_chans;
};
ElementwisePlan elementwise_plan(std::int64_t total_v, std::int64_t C, std::int64_t Mv) {
  const std::int64_t blocks =
      std::min<std::int64_t>(ceil_div<std::int64_t>(total_v, kV3Threads), kV3MaxElementwiseBlocks);
  const std::int64_t stride = blocks * kV3Threads;
  return {static_cast<unsigned>(blocks), stride % Mv, (stride / Mv) % C};
}

void check_v3_grid(std::int64_t c, std::int64_t parts) {
  if (c * parts > 0x7fffffff)
    throw std::invalid_argument("batch_norm variant 3: " + std::to_string(c) + " channels is too many for one grid");
}

int resolve(int variant) {
  if (variant == 0) variant = 2;
  check_variant(variant, 3, "batch_norm");
  return variant;
}

void check_act(int act) {
  if (act != kBnIdentity && act != kBnLeakyRelu)
    throw std::invalid_argument("batch_norm: unknown activation " + std::to_string(act));
}

// float4 loads: variant 2, when the rows and pointers allow them
bool use_vec(int variant, std::int64_t M, std::initializer_list<const void*> ptrs) {
  return (variant == 2 || variant == 3) && float4_rows_ok(M, ptrs);
}

}  // namespace

std::vector<std::string> batch_norm_variants() {
  return {"one 256-thread block per channel, scalar, warp-shuffle block reductions",
          "one 512-thread block per channel, float4 loads when M % 4 == 0 and aligned",
          "several blocks per channel: partial statistics in a workspace merged in a fixed order, then "
          "an elementwise normalise; float4 loads as 2"};
}

std::int64_t batch_norm_workspace_size(std::int64_t n, std::int64_t c, std::int64_t m, int variant) {
  variant = resolve(variant);
  if (variant != 3 || c == 0) return 0;
  return c * (2 * v3_parts(c, n * m) + kV3TableStride);
}

namespace {

void batch_norm_v3_forward(const float* x, const float* gamma, const float* beta, float* running_mean,
                           float* running_var, float* y, float* mean, float* rstd, float* workspace, std::int64_t n,
                           std::int64_t c, std::int64_t m, bool training, float momentum, float eps, int act,
                           float slope, cudaStream_t st) {
  const bool vec = use_vec(3, m, {x, y});
  const std::int64_t Mv = vec ? m / 4 : m, parts = v3_parts(c, n * m), width = vec ? 4 : 1;
  check_v3_grid(c, parts);
  float* table = workspace;
  float* partials = workspace + kV3TableStride * c;
  if (training) {
    if (vec) {
      auto partial_stats = bn3_partial_stats<true>;
      PYGAN_LAUNCH(partial_stats, static_cast<unsigned>(c * parts), kV3Threads, 0, st, x, partials, n, c, Mv, parts);
    } else {
      auto partial_stats = bn3_partial_stats<false>;
      PYGAN_LAUNCH(partial_stats, static_cast<unsigned>(c * parts), kV3Threads, 0, st, x, partials, n, c, Mv, parts);
    }
  }
  PYGAN_LAUNCH(bn3_combine_stats, static_cast<unsigned>(ceil_div<std::int64_t>(c, kV3Threads)), kV3Threads, 0, st,
               partials, table, gamma, beta, running_mean, running_var, mean, rstd, c, parts, n * Mv,
               static_cast<int>(width), int(training), momentum, eps);
  const std::int64_t total_v = n * c * Mv;
  if (total_v == 0) return;
  const ElementwisePlan plan = elementwise_plan(total_v, c, Mv);
  if (vec) {
    auto normalise = bn3_normalise<true>;
    PYGAN_LAUNCH(normalise, plan.blocks, kV3Threads, 0, st, x, table, y, total_v, c, Mv, plan.step_cols,
                 plan.step_chans, act, slope);
  } else {
    auto normalise = bn3_normalise<false>;
    PYGAN_LAUNCH(normalise, plan.blocks, kV3Threads, 0, st, x, table, y, total_v, c, Mv, plan.step_cols,
                 plan.step_chans, act, slope);
  }
}

void batch_norm_v3_backward(const float* x, const float* gamma, const float* beta, const float* dy, const float* mean,
                            const float* rstd, float* dx, float* dgamma, float* dbeta, float* workspace,
                            std::int64_t n, std::int64_t c, std::int64_t m, bool training, int act, float slope,
                            cudaStream_t st) {
  const bool vec = use_vec(3, m, {x, dy, dx});
  const std::int64_t Mv = vec ? m / 4 : m, parts = v3_parts(c, n * m);
  check_v3_grid(c, parts);
  float* table = workspace;
  float* partials = workspace + kV3TableStride * c;
  if (vec) {
    auto partial_grads = bn3_partial_grads<true>;
    PYGAN_LAUNCH(partial_grads, static_cast<unsigned>(c * parts), kV3Threads, 0, st, x, gamma, beta, dy, mean, rstd,
                 partials, n, c, Mv, parts, act, slope);
  } else {
    auto partial_grads = bn3_partial_grads<false>;
    PYGAN_LAUNCH(partial_grads, static_cast<unsigned>(c * parts), kV3Threads, 0, st, x, gamma, beta, dy, mean, rstd,
                 partials, n, c, Mv, parts, act, slope);
  }
  PYGAN_LAUNCH(bn3_combine_grads, static_cast<unsigned>(ceil_div<std::int64_t>(c, kV3Threads)), kV3Threads, 0, st,
               partials, table, gamma, beta, mean, rstd, dgamma, dbeta, c, parts, n * m, int(training));
  const std::int64_t total_v = n * c * Mv;
  if (total_v == 0) return;
  const ElementwisePlan plan = elementwise_plan(total_v, c, Mv);
  if (vec) {
    auto input_grad = bn3_input_grad<true>;
    PYGAN_LAUNCH(input_grad, plan.blocks, kV3Threads, 0, st, x, dy, table, dx, total_v, c, Mv, plan.step_cols,
                 plan.step_chans, act, slope);
  } else {
    auto input_grad = bn3_input_grad<false>;
    PYGAN_LAUNCH(input_grad, plan.blocks, kV3Threads, 0, st, x, dy, table, dx, total_v, c, Mv, plan.step_cols,
                 plan.step_chans, act, slope);
  }
}

void check_workspace(const float* workspace, std::int64_t n, std::int64_t c, std::int64_t m, const char* op) {
  if (!workspace)
    throw std::invalid_argument(std::string(op) + ": variant 3 needs a workspace of " +
                                std::to_string(batch_norm_workspace_size(n, c, m, 3)) +
                                " floats (batch_norm_workspace_size)");
}

}  // namespace

void batch_norm_forward(const float* x, const float* gamma, const float* beta, float* running_mean,
                        float* running_var, float* y, float* mean, float* rstd, std::int64_t n, std::int64_t c,
                        std::int64_t m, bool training, float momentum, float eps, int act, float slope,
                        int variant, std::uintptr_t stream, float* workspace) {
  variant = resolve(variant);
  check_act(act);
  if (c == 0) return;
  if (!training && (!running_mean || !running_var))
    throw std::invalid_argument("batch_norm_forward: evaluation needs running_mean and running_var");
  if (training && n * m < 2) throw std::invalid_argument("batch_norm_forward: training needs > 1 value per channel");
  const cudaStream_t st = stream_from(stream);
  if (variant == 3) {
    check_workspace(workspace, n, c, m, "batch_norm_forward");
    batch_norm_v3_forward(x, gamma, beta, running_mean, running_var, y, mean, rstd, workspace, n, c, m, training,
                          momentum, eps, act, slope, st);
    return;
  }
  const int block = variant == 2 ? 512 : 256;
  if (use_vec(variant, m, {x, y})) {
    auto kern = bn_forward<true>;
    PYGAN_LAUNCH(kern, static_cast<unsigned>(c), block, 0, st, x, gamma, beta, running_mean, running_var, y, mean,
                 rstd, n, c, m, int(training), momentum, eps, act, slope);
  } else {
    auto kern = bn_forward<false>;
    PYGAN_LAUNCH(kern, static_cast<unsigned>(c), block, 0, st, x, gamma, beta, running_mean, running_var, y, mean,
                 rstd, n, c, m, int(training), momentum, eps, act, slope);
  }
}

void batch_norm_backward(const float* x, const float* gamma, const float* beta, const float* dy, const float* mean,
                         const float* rstd, float* dx, float* dgamma, float* dbeta, std::int64_t n, std::int64_t c,
                         std::int64_t m, bool training, int act, float slope, int variant, std::uintptr_t stream,
                         float* workspace) {
  variant = resolve(variant);
  check_act(act);
  if (c == 0) return;
  const cudaStream_t st = stream_from(stream);
  if (variant == 3) {
    check_workspace(workspace, n, c, m, "batch_norm_backward");
    batch_norm_v3_backward(x, gamma, beta, dy, mean, rstd, dx, dgamma, dbeta, workspace, n, c, m, training, act, slope,
                           st);
    return;
  }
  const int block = variant == 2 ? 512 : 256;
  if (use_vec(variant, m, {x, dy, dx})) {
    auto kern = bn_backward<true>;
    PYGAN_LAUNCH(kern, static_cast<unsigned>(c), block, 0, st, x, gamma, beta, dy, mean, rstd, dx, dgamma, dbeta, n,
                 c, m, int(training), act, slope);
  } else {
    auto kern = bn_backward<false>;
    PYGAN_LAUNCH(kern, static_cast<unsigned>(c), block, 0, st, x, gamma, beta, dy, mean, rstd, dx, dgamma, dbeta, n,
                 c, m, int(training), act, slope);
  }
}

}  // namespace pygan
