// pygan._cpu's GEMM (csrc/cpu/gemm.cpp): C = A B through offset tables. See gemm.cpp's header.
#pragma once
#include <cstdint>

namespace pygan_cpu {

// Element (r, c) of an operand is p[row[r] + col[c]]; unit_col says col[c + 1] == col[c] + 1
// for every c (rows are contiguous), unit_row the same of row, which packing uses to copy whole runs.
struct Operand {
  const float* p;
  const int64_t* row;
  const int64_t* col;
  bool unit_row, unit_col;
  Operand transposed() const { return {p, col, row, unit_col, unit_row}; }
};

enum class Isa { generic, avx2, avx512 };

Isa best_isa();                 // the widest micro-kernel this CPU runs
bool isa_supported(Isa isa);    // whether this CPU runs isa's micro-kernel
const char* isa_name(Isa isa);  // "generic", "avx2", "avx512"

// The output: element (i, j) at c[i * rs + j * cs], or at c[row[i] + j * cs] when row is given
// (rows scattered through an image, as one parity class of a transposed convolution's output).
struct Out {
  float* c;
  int64_t rs, cs;
  const int64_t* row;
  int64_t row_offset(int64_t i) const { return row ? row[i] : i * rs; }
};

// C (m x n) = A (m x k) B (k x n), or += when accumulate. Computes C^T = B^T A^T instead when that
// pads the tiles much less (say n = 1 or n = 16) and C has no row table. a_streams: A is read from
// memory (a patch matrix of a large image), so keeping each row block's A in cache across the K
// slices pays (gemm.cpp, "B resident").
void gemm(Isa isa, int64_t m, int64_t n, int64_t k, const Operand& A, const Operand& B, const Out& C, bool accumulate,
          int threads, bool a_streams = false);

}  // namespace pygan_cpu
