// Shared AVX-512 helpers of csrc/cpu (gemm.cpp, layout.cpp).
#pragma once

#if defined(__x86_64__) || defined(_M_X64)
#define PYGAN_CPU_X86 1
#include <immintrin.h>
// GCC 12 reports the `__Y = __Y` inside its own AVX-512 headers as maybe-uninitialized
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace pygan_cpu {

// r[i] = column i of the 16 x 16 matrix whose rows were r[0..15] (unpack, shuffle within 128-bit
// lanes, then two rounds of 128-bit lane shuffles: 64 shuffles for 256 floats).
__attribute__((target("avx512f"))) inline void transpose16(__m512 r[16]) {
  __m512 t[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {
    r[i] = _mm512_shuffle_ps(t[i], t[i + 2], 0x44);
    r[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], 0xEE);
    r[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44);
    r[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
  }
  for (int i = 0; i < 8; ++i) {
    const int a = (i / 4) * 8 + i % 4;  // pairs (0,4) (1,5) (2,6) (3,7) (8,12) ...
    t[2 * i] = _mm512_shuffle_f32x4(r[a], r[a + 4], 0x88);
    t[2 * i + 1] = _mm512_shuffle_f32x4(r[a], r[a + 4], 0xDD);
  }
  // t[2c], t[2c+1]: lanes of column c's rows 0-7 and t[2c+8], t[2c+9] of rows 8-15: combine them
  for (int i = 0; i < 4; ++i) {
    r[i] = _mm512_shuffle_f32x4(t[2 * i], t[2 * i + 8], 0x88);
    r[i + 8] = _mm512_shuffle_f32x4(t[2 * i], t[2 * i + 8], 0xDD);
    r[i + 4] = _mm512_shuffle_f32x4(t[2 * i + 1], t[2 * i + 9], 0x88);
    r[i + 12] = _mm512_shuffle_f32x4(t[2 * i + 1], t[2 * i + 9], 0xDD);
  }
}

// The same for 8 x 8 with AVX2 (24 shuffles for 64 floats).
__attribute__((target("avx2"))) inline void transpose8(__m256 r[8]) {
  __m256 t[8], u[8];
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {
    u[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
    u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
    u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
    u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
  }
  for (int i = 0; i < 4; ++i) {  // u[i]: columns i (low half) and i + 4 (high) of rows 0-3; u[i+4] of rows 4-7
    r[i] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x20);
    r[i + 4] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x31);
  }
}

}  // namespace pygan_cpu
#endif
