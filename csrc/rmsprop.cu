// RMSprop step with torch.optim.RMSprop's semantics (L2 weight decay, optional momentum and
// centering), in place, over MANY tensors per launch (csrc/multi_tensor.cuh, as adam.cu):
//   g = grad + wd*p;  v = alpha*v + (1-alpha)*g*g;
//   centered: ga = alpha*ga + (1-alpha)*g, avg = sqrt(v - ga*ga) + eps;  else avg = sqrt(v) + eps;
//   momentum > 0: buf = momentum*buf + g/avg, p -= lr*buf;  else p -= lr*g/avg.
// momentum_buffer / grad_avg pointers are null when momentum == 0 / !centered, and never read then.
//
// Variants:
//   1: multi-tensor, scalar loads (a plain port of the reference)
//   2: multi-tensor, float4 loads for tensors whose pointers are all 16-byte aligned, scalar for
//      the others and for the n % 4 tail. Default (timing not yet measured: no GPU here).
#include <cmath>

#include "common.cuh"
#include "launchers.h"
#include "multi_tensor.cuh"

namespace pygan {
namespace {

constexpr int kMaxTensors = 32;  // 32 * 48 + 33 * 4 + 32 * 4 bytes: far below the 4 KB argument limit
constexpr int kBlock = 256;
constexpr int kChunk = kBlock * 8;  // elements per block; a multiple of 4

using Batch = TensorBatch<RmspropTensor, kMaxTensors>;

struct Hyper {
  float lr, alpha, one_minus_alpha, eps, weight_decay, momentum;
  int centered, has_momentum;
};

__device__ __forceinline__ void update(float& p, float g, float& v, float& buf, float& ga, const Hyper& h) {
  if (h.weight_decay != 0.0f) g = g + h.weight_decay * p;
  v = h.alpha * v + h.one_minus_alpha * (g * g);
  float avg;
  if (h.centered) {
    ga = h.alpha * ga + h.one_minus_alpha * g;
    avg = sqrtf(v - ga * ga) + h.eps;
  } else {
    avg = sqrtf(v) + h.eps;
  }
  if (h.has_momentum) {
    buf = h.momentum * buf + g / avg;
    p = p - h.lr * buf;
  } else {
    p = p - h.lr * (g / avg);
  }
}

__device__ __forceinline__ void update_at(const RmspropTensor& a, std::int64_t i, const Hyper& h) {
  float p = a.param[i], v = a.square_avg[i];
  float buf = h.has_momentum ? a.momentum_buffer[i] : 0.0f;
  float ga = h.centered ? a.grad_avg[i] : 0.0f;
  update(p, a.grad[i], v, buf, ga, h);
  a.param[i] = p;
  a.square_avg[i] = v;
  if (h.has_momentum) a.momentum_buffer[i] = buf;
  if (h.centered) a.grad_avg[i] = ga;
}

template <bool VEC>
__global__ void rmsprop_kernel(Batch batch, Hyper h) {
  const int ti = batch_tensor(batch);
  const RmspropTensor& a = batch.t[ti];
  std::int64_t begin, end;
  batch_range(batch, ti, kChunk, begin, end);
  if (VEC && batch.vec4[ti]) {
    const std::int64_t end4 = begin + (end - begin) / 4 * 4;  // begin is a multiple of 4
    float4* p4 = reinterpret_cast<float4*>(a.param);
    const float4* g4 = reinterpret_cast<const float4*>(a.grad);
    float4* v4 = reinterpret_cast<float4*>(a.square_avg);
    float4* b4 = reinterpret_cast<float4*>(a.momentum_buffer);
    float4* ga4 = reinterpret_cast<float4*>(a.grad_avg);
    const float4 zero = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    for (std::int64_t j = begin / 4 + threadIdx.x; j < end4 / 4; j += blockDim.x) {
      float4 p = p4[j], v = v4[j];
      float4 b = h.has_momentum ? b4[j] : zero;
      float4 ga = h.centered ? ga4[j] : zero;
      const float4 g = g4[j];
      update(p.x, g.x, v.x, b.x, ga.x, h);
      update(p.y, g.y, v.y, b.y, ga.y, h);
      update(p.z, g.z, v.z, b.z, ga.z, h);
      update(p.w, g.w, v.w, b.w, ga.w, h);
      p4[j] = p;
      v4[j] = v;
      if (h.has_momentum) b4[j] = b;
      if (h.centered) ga4[j] = ga;
    }
    const std::int64_t i = end4 + threadIdx.x;  // at most 3 tail elements
    if (i < end) update_at(a, i, h);
  } else {
    for (std::int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) update_at(a, i, h);
  }
}

}  // namespace

std::vector<std::string> rmsprop_variants() {
  return {"multi-tensor, scalar", "multi-tensor, float4 where aligned"};
}

void rmsprop_step(const std::vector<RmspropTensor>& tensors, double lr, double alpha, double eps, double weight_decay,
                  double momentum, bool centered, int variant, std::uintptr_t stream) {
  if (variant == 0) variant = 2;
  check_variant(variant, 2, "rmsprop");
  if (!(momentum >= 0.0)) throw std::invalid_argument("rmsprop_step: momentum must be >= 0");
  Hyper h;
  h.lr = static_cast<float>(lr);
  h.alpha = static_cast<float>(alpha);
  h.one_minus_alpha = static_cast<float>(1.0 - alpha);
  h.eps = static_cast<float>(eps);
  h.weight_decay = static_cast<float>(weight_decay);
  h.momentum = static_cast<float>(momentum);
  h.centered = centered ? 1 : 0;
  h.has_momentum = momentum > 0.0 ? 1 : 0;
  for (const RmspropTensor& a : tensors)
    if (a.n > 0 && ((h.has_momentum && !a.momentum_buffer) || (h.centered && !a.grad_avg)))
      throw std::invalid_argument("rmsprop_step: a momentum_buffer or grad_avg pointer is missing");
  const cudaStream_t s = stream_from(stream);
  const auto aligned = [](const RmspropTensor& a) {
    for (const void* p : {static_cast<const void*>(a.param), static_cast<const void*>(a.grad),
                          static_cast<const void*>(a.square_avg), static_cast<const void*>(a.momentum_buffer),
                          static_cast<const void*>(a.grad_avg)})
      if (p && !is_aligned(p, 16)) return false;
    return true;
  };
  const auto launch = [&](const Batch& batch) {
    const int blocks = batch.block_start[batch.count];
    if (variant == 2) {
      PYGAN_LAUNCH(rmsprop_kernel<true>, blocks, kBlock, 0, s, batch, h);
    } else {
      PYGAN_LAUNCH(rmsprop_kernel<false>, blocks, kBlock, 0, s, batch, h);
    }
  };
  for_each_batch<kMaxTensors>(tensors, kChunk, aligned, launch, "rmsprop_step");
}

}  // namespace pygan
