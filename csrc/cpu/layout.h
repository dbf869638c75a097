// The NCHW <-> NHWC copies around the convolutions' GEMMs (csrc/cpu/layout.cpp).
#pragma once
#include <cstdint>

#include "gemm.h"

namespace pygan_cpu {

// dst[j * dst_rs + i] = src[i * src_rs + j] for i < rows, j < cols
void transpose(Isa isa, const float* src, int64_t src_rs, float* dst, int64_t dst_rs, int64_t rows, int64_t cols);

// out (N, H + 2ph, W + 2pw, C) = x (N, C, H, W) moved to NHWC, zero border
void nchw_to_nhwc(Isa isa, const float* x, int64_t n, int64_t c, int64_t h, int64_t w, int64_t ph, int64_t pw, float* out,
                  int threads);

// out (N, O, P) = ym (N*P, O) per image, plus bias[o] when bias is not null
void nhwc_to_nchw(Isa isa, const float* ym, int64_t n, int64_t p, int64_t o, const float* bias, float* out, int threads);

}  // namespace pygan_cpu
