// A convolution's gradient with respect to its input without col2im (csrc/cpu/conv.cpp).
#pragma once
#include <cstdint>

#include "gemm.h"

namespace pygan_cpu {

struct ConvGeometry {
  int64_t n, c, h, w;    // the input x: (N, C, H, W)
  int64_t o, oh, ow;     // the output y: (N, O, OH, OW)
  int64_t kh, kw, sh, sw, ph, pw;
};

// dx (N, C, H, W) = d(conv2d(x, w, stride, padding)) / dx applied to dy (N, O, OH, OW), w (O, C, kh, kw);
// all NCHW. The same computation is conv_transpose2d's forward (x as dy, its output as dx).
void conv_backward_data(Isa isa, const ConvGeometry& g, const float* dy, const float* w, float* dx, int threads);

}  // namespace pygan_cpu
