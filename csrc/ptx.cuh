// ptx.cuh: the few PTX instructions our kernels issue through inline assembly, each in one small
// device function whose body is the `asm volatile` under nvcc and the host emulation's exact model
// of it (csrc/emu/cuda_emu.h) under PYGAN_EMULATION, so the kernel source is the same in both.
//
//   tf32_round(x)          cvt.rna.tf32.f32: x rounded to TF32 (nearest, ties away; 10-bit
//                          mantissa), as the .b32 register mma.sync takes
//   mma_m16n8k8_tf32(d, a, b)
//                          mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 d, a, b, d: one warp
//                          computes D(16x8) += A(16x8) * B(8x8); every lane holds a0..a3 (A at
//                          (g, t), (g+8, t), (g, t+4), (g+8, t+4)), b0, b1 (B at (t, g), (t+4, g)) and
//                          d0..d3 (D at (g, 2t), (g, 2t+1), (g+8, 2t), (g+8, 2t+1)), g = lane / 4,
//                          t = lane % 4 (PTX ISA, "Matrix Fragments for mma.m16n8k8", .tf32). All 32
//                          lanes must execute it. sm_80+ only: callers guard on __CUDA_ARCH__.
//   cp_async_f32(dst, src, valid)
//                          cp.async.ca.shared.global of 4 bytes, zero-filled when !valid (src is then
//                          never read); below sm_80 a plain load and store
//   cp_async_commit()      cp.async.commit_group
//   cp_async_wait<N>()     cp.async.wait_group N: all but the N most recent groups have landed
//                          (this thread's copies; a __syncthreads() then publishes them to the block)
#pragma once

#include "common.cuh"

namespace pygan {

__device__ __forceinline__ std::uint32_t tf32_round(float x) {
#if defined(PYGAN_EMULATION)
  return pygan_emu::cvt_rna_tf32(x);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  std::uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(x));
  return r;
#else
  return __float_as_uint(x);  // never used below sm_80 (the tensor-core kernels trap there)
#endif
}

__device__ __forceinline__ void mma_m16n8k8_tf32(float (&d)[4], const std::uint32_t (&a)[4],
                                                 const std::uint32_t (&b)[2]) {
#if defined(PYGAN_EMULATION)
  pygan_emu::mma_m16n8k8_tf32(d, a, b, d);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
  (void)d, (void)a, (void)b;
  __trap();  // tensor cores need sm_80; the launchers refuse older archs before getting here
#endif
}

__device__ __forceinline__ void cp_async_f32(float* dst, const float* src, bool valid) {
#if defined(PYGAN_EMULATION)
  pygan_emu::cp_async(dst, src, 4, valid ? 4 : 0);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const unsigned smem = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(smem), "l"(src), "r"(valid ? 4 : 0));
#else
  *dst = valid ? *src : 0.0f;
#endif
}

__device__ __forceinline__ void cp_async_commit() {
#if !defined(PYGAN_EMULATION) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;\n" ::);
#endif
}

template <int N>
__device__ __forceinline__ void cp_async_wait() {
#if !defined(PYGAN_EMULATION) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
#endif
}

}  // namespace pygan
