// The AVX-512 single-precision GEMM (see gemm_avx512.cpp). Call it only when
// cpu_isa() == Isa::Avx512; blas.h chooses.
#pragma once

#include <cstdint>
#include <vector>

#include "vec_math.h"

namespace fastvae {
namespace cpu {

constexpr int64_t kPanel = 32;  // NR: columns per packed panel

// Right operand B [K, N] packed into panels of kPanel columns.
struct PackedB {
  int64_t K = 0, N = 0;
  std::vector<float> data;
};

// A column range of a PackedB: panels [col0 / kPanel, ...) covering N columns.
struct PanelsView {
  const float* data;
  int64_t K, N;
};

// Columns [col0, col0 + ncols) of Bp; col0 must be a multiple of kPanel.
PanelsView panels(const PackedB& Bp, int64_t col0, int64_t ncols);

// C[M, N] = A[M, K] @ view + beta * C on the calling thread (A row-major).
void gemm_panels(int64_t M, const float* A, int64_t lda, PanelsView B, float beta, float* C, int64_t ldc);

// Packs B (stored [K, N], or [N, K] when trans_b) with leading dimension ldb.
void pack_b(bool trans_b, int64_t K, int64_t N, const float* B, int64_t ldb, PackedB& out);

// C[M, N] = op(A)[M, K] @ B + beta * C. A is stored [M, K] (lda >= K), or
// [K, M] (lda >= M) when trans_a.
void gemm_packed(bool trans_a, int64_t M, const float* A, int64_t lda, const PackedB& Bp,
                 float beta, float* C, int64_t ldc);

}  // namespace cpu
}  // namespace fastvae
