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
#include <cmath>

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
      y4[i] = make_float4(apply_act((v.x - mean) * scale + shift, act, slope),
                          apply_act((v.y - mean) * scale + shift, act, slope),
                          apply_act((v.z - mean) * scale + shift, act, slope),
                          apply_act((v.w - mean) * scale + shift, act, slope));
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

int resolve(int variant) {
  if (variant == 0) variant = 2;
  check_variant(variant, 2, "batch_norm");
  return variant;
}

void check_act(int act) {
  if (act != kBnIdentity && act != kBnLeakyRelu)
    throw std::invalid_argument("batch_norm: unknown activation " + std::to_string(act));
}

// float4 loads: variant 2, when the rows and pointers allow them
bool use_vec(int variant, std::int64_t M, std::initializer_list<const void*> ptrs) {
  return variant == 2 && float4_rows_ok(M, ptrs);
}

}  // namespace

std::vector<std::string> batch_norm_variants() {
  return {"one 256-thread block per channel, scalar, warp-shuffle block reductions",
          "one 512-thread block per channel, float4 loads when M % 4 == 0 and aligned"};
}

void batch_norm_forward(const float* x, const float* gamma, const float* beta, float* running_mean,
                        float* running_var, float* y, float* mean, float* rstd, std::int64_t n, std::int64_t c,
                        std::int64_t m, bool training, float momentum, float eps, int act, float slope,
                        int variant, std::uintptr_t stream) {
  variant = resolve(variant);
  check_act(act);
  if (c == 0) return;
  if (!training && (!running_mean || !running_var))
    throw std::invalid_argument("batch_norm_forward: evaluation needs running_mean and running_var");
  if (training && n * m < 2) throw std::invalid_argument("batch_norm_forward: training needs > 1 value per channel");
  const cudaStream_t st = stream_from(stream);
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
                         std::int64_t m, bool training, int act, float slope, int variant, std::uintptr_t stream) {
  variant = resolve(variant);
  check_act(act);
  if (c == 0) return;
  const cudaStream_t st = stream_from(stream);
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
