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

// Packs B (stored [K, N], or [N, K] when trans_b) with leading dimension ldb.
void pack_b(bool trans_b, int64_t K, int64_t N, const float* B, int64_t ldb, PackedB& out);

// C[M, N] = op(A)[M, K] @ B + beta * C. A is stored [M, K] (lda >= K), or
// [K, M] (lda >= M) when trans_a.
void gemm_packed(bool trans_a, int64_t M, const float* A, int64_t lda, const PackedB& Bp,
                 float beta, float* C, int64_t ldc);

}  // namespace cpu
}  // namespace fastvae
