// The NCHW <-> NHWC copies around the convolutions' GEMMs. pygan's op contract is NCHW; the GEMMs
// want channels innermost (NHWC), so each convolution moves its input to a padded NHWC image and
// its NHWC result back. Both are a 2-D transpose per image (or per image row); numpy does them as
// strided element copies, here AVX-512 moves 16 x 16 blocks through registers (simd.h), AVX2 8 x 8
// ones, and other CPUs take 16 x 16 blocks element by element (the blocking keeps both in cache).
#include "layout.h"

#include <algorithm>
#include <cstring>

#include "buffer.h"
#include "simd.h"
#ifdef _OPENMP
#include <omp.h>
#endif

namespace pygan_cpu {
namespace {

void transpose_generic(const float* src, int64_t srs, float* dst, int64_t drs, int64_t rows, int64_t cols) {
  constexpr int64_t B = 16;
  for (int64_t i0 = 0; i0 < rows; i0 += B)
    for (int64_t j0 = 0; j0 < cols; j0 += B) {
      const int64_t i1 = std::min(rows, i0 + B), j1 = std::min(cols, j0 + B);
      for (int64_t j = j0; j < j1; ++j)
        for (int64_t i = i0; i < i1; ++i) dst[j * drs + i] = src[i * srs + j];
    }
}

#ifdef PYGAN_CPU_X86
__attribute__((target("avx512f"))) inline void block16(const float* src, int64_t srs, float* dst, int64_t drs,
                                                        int64_t r, int64_t c) {
  const __mmask16 rmask = static_cast<__mmask16>((1u << r) - 1), cmask = static_cast<__mmask16>((1u << c) - 1);
  __m512 v[16];
  for (int i = 0; i < 16; ++i) v[i] = i < r ? _mm512_maskz_loadu_ps(cmask, src + i * srs) : _mm512_setzero_ps();
  transpose16(v);
  for (int j = 0; j < c; ++j) _mm512_mask_storeu_ps(dst + j * drs, rmask, v[j]);
}

__attribute__((target("avx512f"))) void transpose_avx512(const float* src, int64_t srs, float* dst, int64_t drs,
                                                          int64_t rows, int64_t cols) {
  // The side with the longer rows keeps the same 16 rows through the inner loop (streams through
  // them); the other order touched 16 new rows 4 KiB apart at every step, and a 1024-pixel image's
  // transpose ran at half the speed.
  if (drs >= srs) {
    for (int64_t j0 = 0; j0 < cols; j0 += 16)
      for (int64_t i0 = 0; i0 < rows; i0 += 16)
        block16(src + i0 * srs + j0, srs, dst + j0 * drs + i0, drs, std::min<int64_t>(16, rows - i0),
                std::min<int64_t>(16, cols - j0));
  } else {
    for (int64_t i0 = 0; i0 < rows; i0 += 16)
      for (int64_t j0 = 0; j0 < cols; j0 += 16)
        block16(src + i0 * srs + j0, srs, dst + j0 * drs + i0, drs, std::min<int64_t>(16, rows - i0),
                std::min<int64_t>(16, cols - j0));
  }
}

// Whole 8 x 8 blocks through registers, the ragged edges element by element.
__attribute__((target("avx2"))) void transpose_avx2(const float* src, int64_t srs, float* dst, int64_t drs, int64_t rows,
                                                     int64_t cols) {
  const int64_t rows8 = rows / 8 * 8, cols8 = cols / 8 * 8;
  for (int64_t i0 = 0; i0 < rows8; i0 += 8)
    for (int64_t j0 = 0; j0 < cols8; j0 += 8) {
      __m256 v[8];
      for (int i = 0; i < 8; ++i) v[i] = _mm256_loadu_ps(src + (i0 + i) * srs + j0);
      transpose8(v);
      for (int j = 0; j < 8; ++j) _mm256_storeu_ps(dst + (j0 + j) * drs + i0, v[j]);
    }
  if (cols8 < cols) transpose_generic(src + cols8, srs, dst + cols8 * drs, drs, rows, cols - cols8);
  if (rows8 < rows) transpose_generic(src + rows8 * srs, srs, dst + rows8, drs, rows - rows8, cols8);
}
#endif

}  // namespace

void transpose(Isa isa, const float* src, int64_t src_rs, float* dst, int64_t dst_rs, int64_t rows, int64_t cols) {
  if (rows == 1 || cols == 1) {  // a vector: a strided copy (a plain one for one-channel images)
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < cols; ++j) dst[j * dst_rs + i] = src[i * src_rs + j];
    return;
  }
#ifdef PYGAN_CPU_X86
  if (isa == Isa::avx512) return transpose_avx512(src, src_rs, dst, dst_rs, rows, cols);
  if (isa == Isa::avx2) return transpose_avx2(src, src_rs, dst, dst_rs, rows, cols);
#endif
  (void)isa;
  transpose_generic(src, src_rs, dst, dst_rs, rows, cols);
}

void nchw_to_nhwc(Isa isa, const float* x, int64_t n, int64_t c, int64_t h, int64_t w, int64_t ph, int64_t pw, float* out,
                  int threads) {
  const int64_t hp = h + 2 * ph, wp = w + 2 * pw;
  // a scratch image per thread for the padded case, allocated here (not inside the OpenMP region,
  // where a failed allocation could not be reported)
  static thread_local AlignedBuffer scratch_buf;
  float* scratches = pw ? scratch_buf.get(static_cast<size_t>(h * w * c * threads)) : nullptr;
#ifdef _OPENMP
#pragma omp parallel for num_threads(threads) if (threads > 1 && n > 1)
#endif
  for (int64_t b = 0; b < n; ++b) {
    const float* src = x + b * c * h * w;
    float* img = out + b * hp * wp * c;
    if (pw == 0) {  // the padded rows are contiguous: one (C x H*W) transpose below the top border
      transpose(isa, src, h * w, img + ph * wp * c, c, c, h * w);
    } else {
      // one transpose of the whole image into a scratch (DCGAN's images are 4-32 pixels wide, too
      // narrow for row-by-row blocks), then a copy per row into place
      int tid = 0;
#ifdef _OPENMP
      tid = omp_get_thread_num();
#endif
      float* scratch = scratches + h * w * c * tid;
      transpose(isa, src, h * w, scratch, c, c, h * w);
      for (int64_t y = 0; y < h; ++y) {
        float* row = img + (ph + y) * wp * c;
        std::memset(row, 0, sizeof(float) * pw * c);
        std::memcpy(row + pw * c, scratch + y * w * c, sizeof(float) * w * c);
        std::memset(row + (pw + w) * c, 0, sizeof(float) * pw * c);
      }
    }
    if (ph) {
      std::memset(img, 0, sizeof(float) * ph * wp * c);
      std::memset(img + (ph + h) * wp * c, 0, sizeof(float) * ph * wp * c);
    }
  }
}

void nhwc_to_nchw(Isa isa, const float* ym, int64_t n, int64_t p, int64_t o, const float* bias, float* out, int threads) {
#ifdef _OPENMP
#pragma omp parallel for num_threads(threads) if (threads > 1 && n > 1)
#endif
  for (int64_t b = 0; b < n; ++b) {
    float* img = out + b * o * p;
    transpose(isa, ym + b * p * o, o, img, p, p, o);
    if (bias)
      for (int64_t k = 0; k < o; ++k)
        for (int64_t q = 0; q < p; ++q) img[k * p + q] += bias[k];
  }
}

}  // namespace pygan_cpu
