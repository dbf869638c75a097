// Host launchers of every kernel family: plain C++ declarations shared by the kernel files
// (csrc/<op>.cu, which define them) and bindings.cpp (which validates arguments, then calls them).
//
// Conventions, for every family (new families follow them):
//   * raw pointers to float32 device memory (host memory in the emulation module), sizes int64_t;
//   * `int variant`: 0 = the family's default (its fastest verified variant), else 1..count;
//     an unknown variant throws std::invalid_argument (Python ValueError);
//   * `std::uintptr_t stream`: the CUDA stream handle as Python passes it (CuPy's stream.ptr);
//   * launchers allocate nothing (scratch space comes in as an argument, sized by a
//     *_workspace_size function), run on the given stream, launch only through PYGAN_LAUNCH, and
//     throw std::runtime_error on a CUDA error (CUDA_CHECK);
//   * `<family>_variants()` names the variants, in order (variant k is element k-1).
// No CUDA header here: bindings.cpp compiles without one.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace pygan {

// ---- csrc/activation.cu ----------------------------------------------------------------------
enum Activation : int { kLeakyRelu = 0, kTanh = 1, kSigmoid = 2 };
std::vector<std::string> activation_variants();
// y = act(x), n elements; slope is used by leaky_relu only.
void activation_forward(int act, const float* x, float* y, std::int64_t n, float slope, int variant,
                        std::uintptr_t stream);
// dx = dy * act'(.): `in` is x for leaky_relu, the forward's output y for tanh and sigmoid.
void activation_backward(int act, const float* in, const float* dy, float* dx, std::int64_t n, float slope,
                         int variant, std::uintptr_t stream);

// ---- csrc/loss.cu ----------------------------------------------------------------------------
std::vector<std::string> loss_variants();
// floats of scratch space bce_forward needs for n elements (0 when it needs none).
std::int64_t bce_workspace_size(std::int64_t n, int variant);
// loss[0] = mean(max(x,0) - x*t + log1p(exp(-|x|))); deterministic.
void bce_forward(const float* logits, const float* target, float* workspace, float* loss, std::int64_t n,
                 int variant, std::uintptr_t stream);
// dlogits = (sigmoid(x) - t) * dloss[0] / n; dloss is one float in device memory.
void bce_backward(const float* logits, const float* target, const float* dloss, float* dlogits,
                  std::int64_t n, int variant, std::uintptr_t stream);

// ---- csrc/adam.cu ----------------------------------------------------------------------------
struct AdamTensor {
  float* param;
  const float* grad;
  float* exp_avg;
  float* exp_avg_sq;
  std::int64_t n;
};
std::vector<std::string> adam_variants();
// One torch.optim.Adam step over every tensor (a few launches for many tensors, not one each).
// hyper: null, or two floats in device memory [lr/(1-beta1^step), sqrt(1-beta2^step)] that the
// kernel reads instead of computing them from step and lr (CUDA-graph capture: see adam.cu).
void adam_step(const std::vector<AdamTensor>& tensors, std::int64_t step, double lr, double beta1,
               double beta2, double eps, double weight_decay, int variant, std::uintptr_t stream,
               const float* hyper = nullptr);

}  // namespace pygan

// ==== issue 5: conv2d (csrc/conv2d.cu) and batch norm (csrc/batchnorm.cu) ======================
namespace pygan {

// Every size of one conv2d: input (n, c, h, w), weight (o, c, kh, kw), output (n, o, oh, ow),
// stride (sh, sw), padding (ph, pw). conv_transpose2d uses the same struct with x and y swapped.
struct Conv2dShape {
  std::int64_t n, c, h, w, o, kh, kw, oh, ow, sh, sw, ph, pw;
};
std::vector<std::string> conv2d_variants();
// Why a conv2d TF32 variant (5: wmma, 9: mma.sync) cannot run, or "" when it can: the PTX arch its
// kernel was compiled for and the GPU's compute capability, both as major*10+minor (8.0 or newer
// needed for both).
std::string tf32_arch_problem(int ptx_version, int compute_capability, int variant = 5);
// Why variant 9 (the TF32 path the pygan.backends.tf32 opt-in takes) cannot run on the current
// device, or "" when it can (always "" under emulation, which runs it).
std::string conv2d_tf32_problem();
// y = conv2d(x, w) (+ b[o]); b may be null.
void conv2d_forward(const float* x, const float* w, const float* b, float* y, const Conv2dShape& s, int variant,
                    std::uintptr_t stream);
// dx = the adjoint of conv2d_forward in x, applied to dy.
void conv2d_backward_data(const float* dy, const float* w, float* dx, const Conv2dShape& s, int variant,
                          std::uintptr_t stream);
// floats of scratch space conv2d_backward_weight needs (0: none; pass null).
std::int64_t conv2d_backward_weight_workspace_size(const Conv2dShape& s, int variant);
// dw[o,c,i,j] = sum_{n,p,q} dy[n,o,p,q] * x_padded[n,c,p*sh+i,q*sw+j]; deterministic (no atomics).
void conv2d_backward_weight(const float* x, const float* dy, float* dw, float* workspace, const Conv2dShape& s,
                            int variant, std::uintptr_t stream);
// db[o] = sum_{n,t} dy[n,o,t] for dy (n, c, hw); deterministic.
void conv2d_bias_backward(const float* dy, float* db, std::int64_t n, std::int64_t c, std::int64_t hw,
                          std::uintptr_t stream);

enum BnActivation : int { kBnIdentity = 0, kBnLeakyRelu = 1 };
std::vector<std::string> batch_norm_variants();
// x, y (n, c, m); gamma, beta, running_mean, running_var may be null (running stats required when
// !training); mean, rstd (c,) outputs. act: kBnIdentity or kBnLeakyRelu (slope; 0 = ReLU).
// workspace: batch_norm_workspace_size(n, c, m, variant) floats (null when that is 0); the same
// size serves the backward.
std::int64_t batch_norm_workspace_size(std::int64_t n, std::int64_t c, std::int64_t m, int variant);
void batch_norm_forward(const float* x, const float* gamma, const float* beta, float* running_mean,
                        float* running_var, float* y, float* mean, float* rstd, std::int64_t n, std::int64_t c,
                        std::int64_t m, bool training, float momentum, float eps, int act, float slope,
                        int variant, std::uintptr_t stream, float* workspace = nullptr);
// dx from dy (through the fused activation when act != kBnIdentity, which then needs beta as in
// the forward); dgamma, dbeta written when non-null.
void batch_norm_backward(const float* x, const float* gamma, const float* beta, const float* dy, const float* mean,
                         const float* rstd, float* dx, float* dgamma, float* dbeta, std::int64_t n, std::int64_t c,
                         std::int64_t m, bool training, int act, float slope, int variant, std::uintptr_t stream,
                         float* workspace = nullptr);

}  // namespace pygan
// ==== end issue 5 =================================================================================

// ==== issue 6: average pooling (csrc/pool.cu) and softmax cross-entropy (csrc/loss.cu) ==========
// (linear has no kernels of its own: pygan/ops/native_conv_bn.py runs it as a 1x1 conv2d.)
namespace pygan {

// avg_pool2d: input (n, c, h, w), output (n, c, oh, ow), window (kh, kw), stride (sh, sw), no
// padding; oh = (h - kh) / sh + 1, ow = (w - kw) / sw + 1 (checked: std::invalid_argument).
struct Pool2dShape {
  std::int64_t n, c, h, w, kh, kw, sh, sw, oh, ow;
};
std::vector<std::string> avg_pool2d_variants();
// y[n,c,p,q] = mean of x over the window at (p*sh, q*sw).
void avg_pool2d_forward(const float* x, float* y, const Pool2dShape& s, int variant, std::uintptr_t stream);
// dx[n,c,h,v] = sum of dy / (kh*kw) over the windows covering (h, v); 0 where none does. No atomics.
void avg_pool2d_backward(const float* dy, float* dx, const Pool2dShape& s, int variant, std::uintptr_t stream);

// softmax cross-entropy, mean over rows: logits (rows, classes) float32, labels (rows,) int64
// class indices. Variants are the "loss" family's (loss_variants(): one block / two passes).
// A label outside [0, classes) is never used as an index: that row's loss term and its gradient
// row are NaN (so the mean is NaN). The registry (pygan.ops) rejects such labels before a launch.
// floats of scratch space softmax_cross_entropy_forward needs (0 when it needs none).
std::int64_t softmax_cross_entropy_workspace_size(std::int64_t rows, int variant);
// loss[0] = mean_r (logsumexp(x[r, :]) - x[r, labels[r]]); deterministic (no atomics).
void softmax_cross_entropy_forward(const float* logits, const std::int64_t* labels, float* workspace, float* loss,
                                   std::int64_t rows, std::int64_t classes, int variant, std::uintptr_t stream);
// dlogits[r, j] = (softmax(x[r, :])[j] - (j == labels[r])) * dloss[0] / rows; dloss: one float in device memory.
void softmax_cross_entropy_backward(const float* logits, const std::int64_t* labels, const float* dloss,
                                    float* dlogits, std::int64_t rows, std::int64_t classes, int variant,
                                    std::uintptr_t stream);

}  // namespace pygan
// ==== end issue 6 =================================================================================

// ==== issue 12: class embedding (csrc/embedding.cu) ===============================================
namespace pygan {

// weight (num_classes, dim), indices (n,) int64 (any index shape, flattened), y / dy (n, dim),
// dweight (num_classes, dim). An index outside [0, num_classes) is never used as an address: its
// y row is NaN in the forward, and it makes all of dweight NaN in the backward. The registry
// (pygan.ops) rejects such indices for numpy arrays only (no device-to-host sync on CuPy ones).
std::vector<std::string> embedding_variants();
// y[i, :] = weight[indices[i], :].
void embedding_forward(const float* weight, const std::int64_t* indices, float* y, std::int64_t n,
                       std::int64_t num_classes, std::int64_t dim, int variant, std::uintptr_t stream);
// dweight[c, :] = sum of dy[i, :] over i with indices[i] == c (every element written; 0 for an
// unnamed class). Variant 1 uses atomics (not bitwise reproducible); variant 2 is deterministic.
void embedding_backward(const float* dy, const std::int64_t* indices, float* dweight, std::int64_t n,
                        std::int64_t num_classes, std::int64_t dim, int variant, std::uintptr_t stream);

}  // namespace pygan
// ==== end issue 12 ================================================================================

// ==== issue 11: group norm (csrc/groupnorm.cu) and RMSprop (csrc/rmsprop.cu) ====================
namespace pygan {

std::vector<std::string> group_norm_variants();
// x, y (n, c, m) with m >= 1; groups >= 1 divides c; gamma, beta (c,) or null; mean, rstd (n, groups)
// outputs: statistics over each group's (c / groups) * m values, biased variance.
void group_norm_forward(const float* x, const float* gamma, const float* beta, float* y, float* mean, float* rstd,
                        std::int64_t n, std::int64_t c, std::int64_t m, std::int64_t groups, float eps, int variant,
                        std::uintptr_t stream);
// dx from dy; dgamma, dbeta (c,) written when non-null (zeros for n == 0). Deterministic.
void group_norm_backward(const float* x, const float* gamma, const float* dy, const float* mean, const float* rstd,
                         float* dx, float* dgamma, float* dbeta, std::int64_t n, std::int64_t c, std::int64_t m,
                         std::int64_t groups, int variant, std::uintptr_t stream);

struct RmspropTensor {
  float* param;
  const float* grad;
  float* square_avg;
  float* momentum_buffer;  // null unless momentum > 0
  float* grad_avg;         // null unless centered
  std::int64_t n;
};
std::vector<std::string> rmsprop_variants();
// One torch.optim.RMSprop step over every tensor (a few launches for many tensors, not one each).
void rmsprop_step(const std::vector<RmspropTensor>& tensors, double lr, double alpha, double eps, double weight_decay,
                  double momentum, bool centered, int variant, std::uintptr_t stream);

}  // namespace pygan
// ==== end issue 11 ================================================================================
