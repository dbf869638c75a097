// Adam step with torch.optim.Adam's semantics (amsgrad=False, L2 weight decay), in place, over MANY
// tensors per launch:  g = grad + wd*p;  m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g*g;
// p -= lr/(1-b1^step) * m / (sqrt(v)/sqrt(1-b2^step) + eps).
// The launcher packs up to kMaxTensors tensors into a struct passed by value as a kernel argument
// (no device allocation); the grid is flattened over (tensor, chunk of kChunk elements): block b
// finds its tensor from the prefix sums of chunk counts. More tensors -> a few more launches.
// That plumbing is csrc/multi_tensor.cuh, shared with rmsprop.cu.
// The two step-dependent scalars, step_size = lr/(1-b1^step) and bc2_sqrt = sqrt(1-b2^step), come
// by value, or (hyper != null) from a float32 [step_size, bc2_sqrt] array in device memory, which
// every block reads at run time: a launch captured in a CUDA graph then takes each replay's values
// (written into that array before the replay) instead of repeating the capture step's.
//
// Variants:
//   1: multi-tensor, scalar loads (a plain port of the reference)
//   2: multi-tensor, float4 loads for tensors whose four pointers are 16-byte aligned, scalar for
//      the others and for the n % 4 tail. Default (timing not yet measured here: no GPU).
#include <cmath>

#include "common.cuh"
#include "launchers.h"
#include "multi_tensor.cuh"

namespace pygan {
namespace {

constexpr int kMaxTensors = 32;  // 32 * 40 + 33 * 4 bytes: far below the 4 KB kernel-argument limit
constexpr int kBlock = 256;
constexpr int kChunk = kBlock * 8;  // elements per block; a multiple of 4

using Batch = TensorBatch<AdamTensor, kMaxTensors>;

struct Hyper {
  float beta1, one_minus_beta1, beta2, one_minus_beta2, step_size, bc2_sqrt, eps, weight_decay;
};

__device__ __forceinline__ void update(float& p, float g, float& m, float& v, const Hyper& h) {
  if (h.weight_decay != 0.0f) g = g + h.weight_decay * p;
  m = h.beta1 * m + h.one_minus_beta1 * g;
  v = h.beta2 * v + h.one_minus_beta2 * (g * g);
  const float denom = sqrtf(v) / h.bc2_sqrt + h.eps;
  p = p - h.step_size * m / denom;
}

__device__ __forceinline__ void update_at(const AdamTensor& a, std::int64_t i, const Hyper& h) {
  float p = a.param[i], m = a.exp_avg[i], v = a.exp_avg_sq[i];
  update(p, a.grad[i], m, v, h);
  a.param[i] = p;
  a.exp_avg[i] = m;
  a.exp_avg_sq[i] = v;
}

template <bool VEC>
__global__ void adam_kernel(Batch batch, Hyper h, const float* hyper) {
  if (hyper != nullptr) {  // this step's corrections, from device memory (see the header)
    h.step_size = hyper[0];
    h.bc2_sqrt = hyper[1];
  }
  const int ti = batch_tensor(batch);
  const AdamTensor& a = batch.t[ti];
  std::int64_t begin, end;
  batch_range(batch, ti, kChunk, begin, end);
  if (VEC && batch.vec4[ti]) {
    const std::int64_t end4 = begin + (end - begin) / 4 * 4;  // begin is a multiple of 4
    float4* p4 = reinterpret_cast<float4*>(a.param);
    const float4* g4 = reinterpret_cast<const float4*>(a.grad);
    float4* m4 = reinterpret_cast<float4*>(a.exp_avg);
    float4* v4 = reinterpret_cast<float4*>(a.exp_avg_sq);
    for (std::int64_t j = begin / 4 + threadIdx.x; j < end4 / 4; j += blockDim.x) {
      float4 p = p4[j], m = m4[j], v = v4[j];
      const float4 g = g4[j];
      update(p.x, g.x, m.x, v.x, h);
      update(p.y, g.y, m.y, v.y, h);
      update(p.z, g.z, m.z, v.z, h);
      update(p.w, g.w, m.w, v.w, h);
      p4[j] = p;
      m4[j] = m;
      v4[j] = v;
    }
    const std::int64_t i = end4 + threadIdx.x;  // at most 3 tail elements
    if (i < end) update_at(a, i, h);
  } else {
    for (std::int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) update_at(a, i, h);
  }
}

}  // namespace

std::vector<std::string> adam_variants() {
  return {"multi-tensor, scalar", "multi-tensor, float4 where aligned"};
}

void adam_step(const std::vector<AdamTensor>& tensors, std::int64_t step, double lr, double beta1,
               double beta2, double eps, double weight_decay, int variant, std::uintptr_t stream,
               const float* hyper) {
  if (variant == 0) variant = 2;
  check_variant(variant, 2, "adam");
  if (step < 1) throw std::invalid_argument("adam_step: step must be >= 1");
  Hyper h;
  h.beta1 = static_cast<float>(beta1);
  h.one_minus_beta1 = static_cast<float>(1.0 - beta1);
  h.beta2 = static_cast<float>(beta2);
  h.one_minus_beta2 = static_cast<float>(1.0 - beta2);
  h.step_size = static_cast<float>(lr / (1.0 - std::pow(beta1, static_cast<double>(step))));
  h.bc2_sqrt = static_cast<float>(std::sqrt(1.0 - std::pow(beta2, static_cast<double>(step))));
  h.eps = static_cast<float>(eps);
  h.weight_decay = static_cast<float>(weight_decay);
  const cudaStream_t s = stream_from(stream);
  const auto aligned = [](const AdamTensor& a) {
    return is_aligned(a.param, 16) && is_aligned(a.grad, 16) && is_aligned(a.exp_avg, 16) &&
           is_aligned(a.exp_avg_sq, 16);
  };
  const auto launch = [&](const Batch& batch) {
    const int blocks = batch.block_start[batch.count];
    if (variant == 2) {
      PYGAN_LAUNCH(adam_kernel<true>, blocks, kBlock, 0, s, batch, h, hyper);
    } else {
      PYGAN_LAUNCH(adam_kernel<false>, blocks, kBlock, 0, s, batch, h, hyper);
    }
  };
  for_each_batch<kMaxTensors>(tensors, kChunk, aligned, launch, "adam_step");
}

}  // namespace pygan
