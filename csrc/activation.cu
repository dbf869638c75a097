// Pointwise activations, forward and backward: leaky_relu (slope 0 is ReLU), tanh, sigmoid.
// Backward of tanh and sigmoid takes the forward's output y (the reference's contract).
//
// Variants (all launchers take `variant`; 0 picks the default):
//   1: scalar, grid-stride loop, one float per thread per iteration (a plain port of the reference)
//   2: float4-vectorised grid-stride loop with a scalar tail for n % 4; falls back to variant 1 when
//      a pointer is not 16-byte aligned (e.g. a view at an odd offset). Default: memory-bound ops
//      gain from 128-bit accesses (timing not yet measured here: no GPU on the CI machine).
#include "common.cuh"
#include "launchers.h"

namespace pygan {
namespace {

constexpr int kBlock = 256;

template <int ACT>
__device__ __forceinline__ float act_forward(float x, float slope) {
  if constexpr (ACT == kLeakyRelu) {
    // x > 0 ? x : slope*x, except that slope 0 gives 0 for -inf (max(x, 0)); NaN stays NaN.
    return x > 0.0f ? x : (slope == 0.0f && x == x ? 0.0f : x * slope);
  } else if constexpr (ACT == kTanh) {
    return tanhf(x);
  } else {
    const float e = expf(-fabsf(x));  // <= 1: no overflow for any x
    const float r = 1.0f / (1.0f + e);
    return x < 0.0f ? r * e : r;
  }
}

// `in` is x for leaky_relu, y for tanh and sigmoid.
template <int ACT>
__device__ __forceinline__ float act_backward(float in, float dy, float slope) {
  if constexpr (ACT == kLeakyRelu) {
    return in > 0.0f ? dy : slope * dy;
  } else if constexpr (ACT == kTanh) {
    return dy * (1.0f - in * in);
  } else {
    return dy * (in * (1.0f - in));
  }
}

// ---- variant 1: scalar grid-stride -------------------------------------------------------------
template <int ACT>
__global__ void forward_scalar(const float* x, float* y, std::int64_t n, float slope) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
    y[i] = act_forward<ACT>(x[i], slope);
}

template <int ACT>
__global__ void backward_scalar(const float* in, const float* dy, float* dx, std::int64_t n, float slope) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
    dx[i] = act_backward<ACT>(in[i], dy[i], slope);
}

// ---- variant 2: float4 grid-stride, scalar tail ------------------------------------------------
template <int ACT>
__global__ void forward_vec4(const float* x, float* y, std::int64_t n, float slope) {
  const std::int64_t n4 = n / 4, stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  const std::int64_t tid = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  const float4* x4 = reinterpret_cast<const float4*>(x);
  float4* y4 = reinterpret_cast<float4*>(y);
  for (std::int64_t i = tid; i < n4; i += stride) {
    const float4 v = x4[i];
    y4[i] = make_float4(act_forward<ACT>(v.x, slope), act_forward<ACT>(v.y, slope),
                        act_forward<ACT>(v.z, slope), act_forward<ACT>(v.w, slope));
  }
  const std::int64_t t = 4 * n4 + tid;  // at most 3 tail elements
  if (t < n) y[t] = act_forward<ACT>(x[t], slope);
}

template <int ACT>
__global__ void backward_vec4(const float* in, const float* dy, float* dx, std::int64_t n, float slope) {
  const std::int64_t n4 = n / 4, stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  const std::int64_t tid = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  const float4* in4 = reinterpret_cast<const float4*>(in);
  const float4* dy4 = reinterpret_cast<const float4*>(dy);
  float4* dx4 = reinterpret_cast<float4*>(dx);
  for (std::int64_t i = tid; i < n4; i += stride) {
    const float4 a = in4[i], g = dy4[i];
    dx4[i] = make_float4(act_backward<ACT>(a.x, g.x, slope), act_backward<ACT>(a.y, g.y, slope),
                         act_backward<ACT>(a.z, g.z, slope), act_backward<ACT>(a.w, g.w, slope));
  }
  const std::int64_t t = 4 * n4 + tid;
  if (t < n) dx[t] = act_backward<ACT>(in[t], dy[t], slope);
}

// Blocks for a grid-stride loop over `work` items: enough to fill the device, no more.
int grid_for(std::int64_t work) {
  const std::int64_t cap = static_cast<std::int64_t>(sm_count()) * 16;
  const std::int64_t blocks = ceil_div<std::int64_t>(work, kBlock);
  return static_cast<int>(blocks < cap ? blocks : cap);
}

int resolve(int variant) {
  if (variant == 0) variant = 2;
  check_variant(variant, 2, "activation");
  return variant;
}

template <int ACT>
void forward_impl(const float* x, float* y, std::int64_t n, float slope, int variant, cudaStream_t s) {
  if (variant == 2 && is_aligned(x, 16) && is_aligned(y, 16)) {
    auto kernel = forward_vec4<ACT>;
    PYGAN_LAUNCH(kernel, grid_for(n / 4 > 0 ? n / 4 : 1), kBlock, 0, s, x, y, n, slope);
  } else {
    auto kernel = forward_scalar<ACT>;
    PYGAN_LAUNCH(kernel, grid_for(n), kBlock, 0, s, x, y, n, slope);
  }
}

template <int ACT>
void backward_impl(const float* in, const float* dy, float* dx, std::int64_t n, float slope, int variant,
                   cudaStream_t s) {
  if (variant == 2 && is_aligned(in, 16) && is_aligned(dy, 16) && is_aligned(dx, 16)) {
    auto kernel = backward_vec4<ACT>;
    PYGAN_LAUNCH(kernel, grid_for(n / 4 > 0 ? n / 4 : 1), kBlock, 0, s, in, dy, dx, n, slope);
  } else {
    auto kernel = backward_scalar<ACT>;
    PYGAN_LAUNCH(kernel, grid_for(n), kBlock, 0, s, in, dy, dx, n, slope);
  }
}

}  // namespace

std::vector<std::string> activation_variants() {
  return {"scalar grid-stride", "float4 vectorised grid-stride, scalar tail"};
}

void activation_forward(int act, const float* x, float* y, std::int64_t n, float slope, int variant,
                        std::uintptr_t stream) {
  variant = resolve(variant);
  if (n <= 0) return;
  const cudaStream_t s = stream_from(stream);
  switch (act) {
    case kLeakyRelu: return forward_impl<kLeakyRelu>(x, y, n, slope, variant, s);
    case kTanh: return forward_impl<kTanh>(x, y, n, slope, variant, s);
    case kSigmoid: return forward_impl<kSigmoid>(x, y, n, slope, variant, s);
    default: throw std::invalid_argument("activation: unknown activation " + std::to_string(act));
  }
}

void activation_backward(int act, const float* in, const float* dy, float* dx, std::int64_t n, float slope,
                         int variant, std::uintptr_t stream) {
  variant = resolve(variant);
  if (n <= 0) return;
  const cudaStream_t s = stream_from(stream);
  switch (act) {
    case kLeakyRelu: return backward_impl<kLeakyRelu>(in, dy, dx, n, slope, variant, s);
    case kTanh: return backward_impl<kTanh>(in, dy, dx, n, slope, variant, s);
    case kSigmoid: return backward_impl<kSigmoid>(in, dy, dx, n, slope, variant, s);
    default: throw std::invalid_argument("activation: unknown activation " + std::to_string(act));
  }
}

}  // namespace pygan
