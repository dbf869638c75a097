// The CPU convolution GEMM of pygan._cpu: C = A B in float32, with A and B read through offset
// tables, so one routine serves a plain matrix, a transposed one, and the im2col patch matrix of
// an NHWC image that is never written out (the "implicit" im2col: packing gathers the patches).
//
// Why our own and not the BLAS: a BLAS packs its operands into cache-sized panels anyway, so
// gathering the patches while packing costs nothing extra, where im2col + sgemm writes and reads
// the patch matrix (4x the input for DCGAN's 4x4 stride-2 convolutions) once more. And OpenBLAS's
// kernels are whatever OPENBLAS_CORETYPE says, which can pin AVX2 kernels on an AVX-512 CPU.
//
// Structure (GotoBLAS / BLIS): for each NC-wide block of columns, for each KC-deep slice of K,
// pack B's slice into NR-wide slivers; for each MC-tall block of rows, pack A's block into MR-tall
// slivers (zero-padded at the edges); then a register-tiled micro-kernel computes each MR x NR tile
// of C over the KC slice (or, "B resident", all of B's slices first and each row block through
// every slice, when A streams from memory and B is small). Packing A is a transpose: with AVX-512
// (AVX2) 16 (8) contiguous columns of the sliver's rows go through a register transpose, else one
// gather per column. Micro-kernels (chosen at run time from the CPU's features):
//   avx512: 14 x 32 tile, 28 zmm accumulators, A broadcast, two B vectors per k
//   avx2:    6 x 16 tile, 12 ymm accumulators (Haswell and later, Zen)
//   generic: 4 x 16 tile in plain C++ (what the compiler makes of it), any CPU
// Threads: OpenMP over the row blocks (or over column chunks when there are few row blocks); the
// caller passes the count (pygan/ops/cpu_runtime.py's policy). The order of the K summation does
// not depend on the thread count, so results are the same for any number of threads.
#include "gemm.h"

#include "buffer.h"
#include "simd.h"

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <new>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace pygan_cpu {
namespace {

constexpr int64_t KC = 256;

// ---- micro-kernels: tile[MR x NR] = sum over k < kc of a[k][0..MR) outer b[k][0..NR) -------------

#ifdef PYGAN_CPU_X86
__attribute__((target("avx512f"))) void kernel_avx512(int64_t kc, const float* a, const float* b, float* tile) {
  constexpr int MR = 14;
  __m512 c0[MR], c1[MR];
#pragma GCC unroll 14
  for (int i = 0; i < MR; ++i) c0[i] = c1[i] = _mm512_setzero_ps();
  for (int64_t k = 0; k < kc; ++k) {
    const __m512 b0 = _mm512_load_ps(b), b1 = _mm512_load_ps(b + 16);
#pragma GCC unroll 14
    for (int i = 0; i < MR; ++i) {
      const __m512 ai = _mm512_set1_ps(a[i]);
      c0[i] = _mm512_fmadd_ps(ai, b0, c0[i]);
      c1[i] = _mm512_fmadd_ps(ai, b1, c1[i]);
    }
    a += MR;
    b += 32;
  }
#pragma GCC unroll 14
  for (int i = 0; i < MR; ++i) {
    _mm512_store_ps(tile + i * 32, c0[i]);
    _mm512_store_ps(tile + i * 32 + 16, c1[i]);
  }
}

__attribute__((target("avx2,fma"))) void kernel_avx2(int64_t kc, const float* a, const float* b, float* tile) {
  constexpr int MR = 6;
  __m256 c0[MR], c1[MR];
#pragma GCC unroll 6
  for (int i = 0; i < MR; ++i) c0[i] = c1[i] = _mm256_setzero_ps();
  for (int64_t k = 0; k < kc; ++k) {
    const __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
#pragma GCC unroll 6
    for (int i = 0; i < MR; ++i) {
      const __m256 ai = _mm256_broadcast_ss(a + i);
      c0[i] = _mm256_fmadd_ps(ai, b0, c0[i]);
      c1[i] = _mm256_fmadd_ps(ai, b1, c1[i]);
    }
    a += MR;
    b += 16;
  }
#pragma GCC unroll 6
  for (int i = 0; i < MR; ++i) {
    _mm256_store_ps(tile + i * 16, c0[i]);
    _mm256_store_ps(tile + i * 16 + 8, c1[i]);
  }
}
#endif

void kernel_generic(int64_t kc, const float* a, const float* b, float* tile) {
  constexpr int MR = 4, NR = 16;
  float acc[MR][NR] = {};
  for (int64_t k = 0; k < kc; ++k) {
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NR; ++j) acc[i][j] += a[i] * b[j];
    a += MR;
    b += NR;
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) tile[i * NR + j] = acc[i][j];
}

struct KernelInfo {
  Isa isa;
  int mr, nr;
  int64_t mc, nc;
  void (*fn)(int64_t, const float*, const float*, float*);
};

KernelInfo kernel_for(Isa isa) {
  switch (isa) {
#ifdef PYGAN_CPU_X86
    case Isa::avx512: return {isa, 14, 32, 14 * 12, 32 * 96, kernel_avx512};
    case Isa::avx2: return {isa, 6, 16, 6 * 24, 16 * 192, kernel_avx2};
#endif
    default: return {Isa::generic, 4, 16, 4 * 32, 16 * 192, kernel_generic};
  }
}

// ---- packing ----------------------------------------------------------------------------------------

// a_pack[s][k][r] = A(i0 + s*mr + r, k0 + k), zero past row m (a sliver per mr rows). This is a
// transpose (A's rows are contiguous along k, or runs of it for patches); with AVX2/AVX-512 one
// gather per k fetches the sliver's mr rows, which measured about 1.4x faster than element copies.
bool relative_rows(const Operand& A, int64_t r0, int64_t rows, int32_t* rel) {
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t d = A.row[r0 + r] - A.row[r0];
    if (d < INT32_MIN || d > INT32_MAX) return false;
    rel[r] = static_cast<int32_t>(d);
  }
  for (int64_t r = rows; r < 16; ++r) rel[r] = 0;
  return true;
}

#ifdef PYGAN_CPU_X86
// Up to 16 columns k.. of up to 14 rows at once where they are contiguous in every row: 14 loads,
// a 16 x 16 register transpose, 16 stores; elsewhere one gather per k.
__attribute__((target("avx512f"))) void pack_sliver_avx512(const float* base, const int64_t* col, int64_t kb,
                                                            const int32_t* rel, int64_t rows, float* dst) {
  const __m512i idx = _mm512_loadu_si512(rel);
  const __mmask16 live = static_cast<__mmask16>((1u << rows) - 1), store = 0x3fff;  // mr = 14
  int64_t k = 0;
  while (k < kb) {
    int64_t run = 1;  // columns k.. contiguous in every row (up to 16): a 3-channel patch row has 12
    while (run < 16 && k + run < kb && col[k + run] == col[k] + run) ++run;
    if (run >= 4) {
      const __mmask16 part = static_cast<__mmask16>((1u << run) - 1);
      __m512 r[16];
      const float* p = base + col[k];
      for (int i = 0; i < 16; ++i) r[i] = i < rows ? _mm512_maskz_loadu_ps(part, p + rel[i]) : _mm512_setzero_ps();
      transpose16(r);
      for (int i = 0; i < run; ++i) _mm512_mask_storeu_ps(dst + (k + i) * 14, store, r[i]);
      k += run;
    } else {
      _mm512_mask_storeu_ps(dst + k * 14, store, _mm512_mask_i32gather_ps(_mm512_setzero_ps(), live, idx, base + col[k], 4));
      ++k;
    }
  }
}

// mr = 6: 8 columns at once by an 8 x 8 register transpose (rows 6 and 7 zero) where they are
// contiguous, else one gather per k. Each column is stored as 8 floats whose last 2 the next
// column overwrites (AMD's masked stores are slow); the buffer has room for the last one's.
__attribute__((target("avx2,fma"))) void pack_sliver_avx2(const float* base, const int64_t* col, int64_t kb,
                                                          const int32_t* rel, int64_t rows, float* dst) {
  const __m256i idx = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rel));
  alignas(32) int32_t lanes[8];
  for (int r = 0; r < 8; ++r) lanes[r] = r < rows ? -1 : 0;
  const __m256 live = _mm256_castsi256_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(lanes)));
  int64_t k = 0;
  while (k < kb) {
    if (k + 8 <= kb && col[k + 7] - col[k] == 7) {
      __m256 r[8];
      const float* p = base + col[k];
      for (int i = 0; i < 8; ++i) r[i] = i < rows ? _mm256_loadu_ps(p + rel[i]) : _mm256_setzero_ps();
      transpose8(r);
      for (int i = 0; i < 8; ++i) _mm256_storeu_ps(dst + (k + i) * 6, r[i]);
      k += 8;
    } else {
      _mm256_storeu_ps(dst + k * 6, _mm256_mask_i32gather_ps(_mm256_setzero_ps(), base + col[k], idx, live, 4));
      ++k;
    }
  }
}
#endif

void pack_a(Isa isa, const Operand& A, int64_t i0, int64_t mb, int64_t k0, int64_t kb, int mr, float* a_pack) {
  const int64_t* col = A.col + k0;
  for (int64_t s = 0; s < mb; s += mr) {
    const int64_t rows = std::min<int64_t>(mr, mb - s);
    float* sliver = a_pack + s * kb;
    if (A.unit_row) {  // a column of the sliver is contiguous: copy it
      const float* src = A.p + A.row[i0 + s];
      for (int64_t k = 0; k < kb; ++k) {  // a loop, not memcpy: a call per 24 or 56 bytes cost more
        float* dst = sliver + k * mr;
        const float* from = src + col[k];
        int64_t r = 0;
        for (; r < rows; ++r) dst[r] = from[r];
        for (; r < mr; ++r) dst[r] = 0.f;
      }
      continue;
    }
#ifdef PYGAN_CPU_X86
    alignas(64) int32_t rel[16];
    if (isa != Isa::generic && relative_rows(A, i0 + s, rows, rel)) {
      const float* base = A.p + A.row[i0 + s];
      if (isa == Isa::avx512)
        pack_sliver_avx512(base, col, kb, rel, rows, sliver);
      else
        pack_sliver_avx2(base, col, kb, rel, rows, sliver);
      continue;
    }
#endif
    for (int64_t k = 0; k < kb; ++k) {
      const float* src = A.p + col[k];
      int64_t r = 0;
      for (; r < rows; ++r) sliver[k * mr + r] = src[A.row[i0 + s + r]];
      for (; r < mr; ++r) sliver[k * mr + r] = 0.f;
    }
  }
}

// b_pack[s][k][j] = B(k0 + k, j0 + s*nr + j), zero past column n
void pack_b(const Operand& B, int64_t k0, int64_t kb, int64_t j0, int64_t nb, int nr, int64_t s_begin, int64_t s_end,
            float* b_pack) {
  for (int64_t s = s_begin; s < s_end; ++s) {
    const int64_t cols = std::min<int64_t>(nr, nb - s * nr);
    const int64_t* col = B.col + j0 + s * nr;
    // The sliver's columns as runs contiguous in every row (a patch matrix has runs of kw*C
    // floats), each copied by a loop (a memcpy call per 64 or 128 bytes cost more).
    int64_t run_start[32], run_len[32], runs = 0;
    for (int64_t j = 0; j < cols;) {
      int64_t len = 1;
      while (j + len < cols && (B.unit_col || col[j + len] == col[j] + len)) ++len;
      run_start[runs] = j;
      run_len[runs++] = len;
      j += len;
    }
    for (int64_t k = 0; k < kb; ++k) {
      const float* src = B.p + B.row[k0 + k];
      float* dst = b_pack + s * nr * kb + k * nr;
      for (int64_t r = 0; r < runs; ++r) {
        const float* from = src + col[run_start[r]];
        float* to = dst + run_start[r];
        for (int64_t j = 0; j < run_len[r]; ++j) to[j] = from[j];
      }
      for (int64_t j = cols; j < nr; ++j) dst[j] = 0.f;
    }
  }
}

// C(i0 + i, j0 + j) (+)= tile for i < rows, j < cols
inline void store_tile(const float* tile, int nr, int64_t rows, int64_t cols, const Out& C, int64_t i0, int64_t j0,
                       bool accumulate) {
  const int64_t cs = C.cs;
  for (int64_t i = 0; i < rows; ++i) {
    float* ci = C.c + C.row_offset(i0 + i) + j0 * cs;
    const float* ti = tile + i * nr;
    if (cs == 1) {
      if (accumulate)
        for (int64_t j = 0; j < cols; ++j) ci[j] += ti[j];
      else
        for (int64_t j = 0; j < cols; ++j) ci[j] = ti[j];
    } else {
      if (accumulate)
        for (int64_t j = 0; j < cols; ++j) ci[j * cs] += ti[j];
      else
        for (int64_t j = 0; j < cols; ++j) ci[j * cs] = ti[j];
    }
  }
}

// One MC x NC block of C over one KC slice, A's block packed here, B's slice already packed.
void block(const KernelInfo& ki, const Operand& A, int64_t i0, int64_t mb, int64_t k0, int64_t kb, const float* b_pack,
           int64_t j0, int64_t s_begin, int64_t s_end, int64_t nb, const Out& C, bool accumulate, float* a_pack) {
  alignas(64) float tile[14 * 32];
  pack_a(ki.isa, A, i0, mb, k0, kb, ki.mr, a_pack);
  for (int64_t s = s_begin; s < s_end; ++s) {
    const int64_t cols = std::min<int64_t>(ki.nr, nb - s * ki.nr);
    const float* bs = b_pack + s * ki.nr * kb;
    for (int64_t r = 0; r < mb; r += ki.mr) {
      const int64_t rows = std::min<int64_t>(ki.mr, mb - r);
      ki.fn(kb, a_pack + r * kb, bs, tile);
      store_tile(tile, ki.nr, rows, cols, C, i0 + r, j0 + s * ki.nr, accumulate);
    }
  }
}

void gemm_oriented(const KernelInfo& ki, int64_t m, int64_t n, int64_t k, const Operand& A, const Operand& B,
                   const Out& C, bool accumulate, int threads, bool a_streams);

}  // namespace

Isa best_isa() {
#ifdef PYGAN_CPU_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return Isa::avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::avx2;
#endif
  return Isa::generic;
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::avx512: return "avx512";
    case Isa::avx2: return "avx2";
    default: return "generic";
  }
}

bool isa_supported(Isa isa) {
  if (isa == Isa::generic) return true;
  const Isa best = best_isa();
  return best == Isa::avx512 || best == isa;
}

void gemm(Isa isa, int64_t m, int64_t n, int64_t k, const Operand& A, const Operand& B, const Out& C, bool accumulate,
          int threads, bool a_streams) {
  if (m <= 0 || n <= 0) return;
  {
    const KernelInfo ki = kernel_for(isa);
    auto up = [](int64_t v, int64_t to) { return (v + to - 1) / to * to; };
    // C^T's tiles are stored with a stride between columns (a cache line per element): flip for a
    // large saving, or for any saving when C is small (a weight gradient with n = 16, say); and
    // only when A^T, then packed as B, has contiguous runs: a patch matrix's rows do not (with
    // one output channel, D's last layer, the flip made packing 5x the GEMM's time)
    const int64_t flipped = up(n, ki.mr) * up(m, ki.nr), plain = up(m, ki.mr) * up(n, ki.nr);
    if (!C.row && (A.unit_row || m * k <= 65536) && (5 * flipped < 4 * plain || (flipped < plain && m * n <= 65536)))
      return gemm_oriented(ki, n, m, k, B.transposed(), A.transposed(), Out{C.c, C.cs, C.rs, nullptr}, accumulate,
                           threads, false);
    return gemm_oriented(ki, m, n, k, A, B, C, accumulate, threads, a_streams);
  }
}

namespace {
void gemm_oriented(const KernelInfo& ki, int64_t m, int64_t n, int64_t k, const Operand& A, const Operand& B,
                   const Out& C, bool accumulate, int threads, bool a_streams) {
  if (k <= 0) {
    if (!accumulate)
      for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < n; ++j) C.c[C.row_offset(i) + j * C.cs] = 0.f;
    return;
  }
  threads = std::max(1, threads);
  const int64_t nc_max = std::min<int64_t>(ki.nc, (n + ki.nr - 1) / ki.nr * ki.nr);
  const int64_t slices = (k + KC - 1) / KC;
  // B resident: when A streams from memory and all of a column block's B fits in 2 MiB, pack every
  // K slice of B first and then give each row block all its slices in a row, so the image rows a
  // block of patches reads are still in cache for the next slice; GotoBLAS's order (a slice of B,
  // then every row block) reads them from memory once per slice. (D's 64x32x32 -> 128 layer: 165
  // -> 190 GFLOP/s; with A already in cache the order only loses B's slice from L2.)
  const bool resident = a_streams && slices > 1 && nc_max * k * static_cast<int64_t>(sizeof(float)) <= (2 << 20);
  // every buffer before any OpenMP region (an allocation failure must not throw inside one)
  static thread_local AlignedBuffer b_buf, a_buf;
  const int64_t slice_stride = nc_max * KC;
  float* b_pack = b_buf.get(static_cast<size_t>(slice_stride * (resident ? slices : 1)));
  const int64_t a_stride = ki.mc * KC + 16;  // + the AVX2 pack's overhang
  float* a_packs = a_buf.get(static_cast<size_t>(a_stride * threads));
  const int64_t row_blocks = (m + ki.mc - 1) / ki.mc;
  for (int64_t j0 = 0; j0 < n; j0 += ki.nc) {
    const int64_t nb = std::min<int64_t>(ki.nc, n - j0);
    const int64_t slivers = (nb + ki.nr - 1) / ki.nr;
    // few row blocks: split the column slivers between threads too
    const int64_t col_chunks = row_blocks >= 2 * threads ? 1 : std::min<int64_t>(threads, slivers);
    const int64_t tasks = row_blocks * col_chunks;
#ifdef _OPENMP
    const int team = static_cast<int>(std::min<int64_t>(threads, std::max<int64_t>(tasks, slivers)));
#pragma omp parallel num_threads(team) if (team > 1)
#endif
    {
      int tid = 0, nt = 1;
#ifdef _OPENMP
      tid = omp_get_thread_num();
      nt = omp_get_num_threads();
#endif
      float* a_pack = a_packs + a_stride * tid;
      const int64_t s0 = slivers * tid / nt, s1 = slivers * (tid + 1) / nt;  // this thread's share of packing B
      auto run_task = [&](int64_t t, int64_t k0, const float* slice) {
        const int64_t rb = t / col_chunks, cc = t % col_chunks;
        const int64_t i0 = rb * ki.mc, mb = std::min<int64_t>(ki.mc, m - i0);
        block(ki, A, i0, mb, k0, std::min<int64_t>(KC, k - k0), slice, j0, slivers * cc / col_chunks,
              slivers * (cc + 1) / col_chunks, nb, C, accumulate || k0 > 0, a_pack);
      };
      if (resident) {
        for (int64_t k0 = 0; k0 < k; k0 += KC)
          pack_b(B, k0, std::min<int64_t>(KC, k - k0), j0, nb, ki.nr, s0, s1, b_pack + (k0 / KC) * slice_stride);
#ifdef _OPENMP
#pragma omp barrier
#endif
        for (int64_t t = tid; t < tasks; t += nt)
          for (int64_t k0 = 0; k0 < k; k0 += KC) run_task(t, k0, b_pack + (k0 / KC) * slice_stride);
      } else {
        for (int64_t k0 = 0; k0 < k; k0 += KC) {
          pack_b(B, k0, std::min<int64_t>(KC, k - k0), j0, nb, ki.nr, s0, s1, b_pack);
#ifdef _OPENMP
#pragma omp barrier
#endif
          for (int64_t t = tid; t < tasks; t += nt) run_task(t, k0, b_pack);
#ifdef _OPENMP
#pragma omp barrier  // before the next slice overwrites b_pack
#endif
        }
      }
    }
  }
}

}  // namespace

}  // namespace pygan_cpu
