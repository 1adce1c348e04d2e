// Row-major GEMM on raw pointers for the CPU kernels.
//
// The recurrent loops issue one small GEMM per time step; going through the
// ATen dispatcher (at::mm, tensor views) costs microseconds per call, which is
// as much as the GEMM itself at the paper's sizes (64x32x128). So we call the
// BLAS that libtorch_cpu already carries (MKL or OpenBLAS, both export the
// Fortran symbols sgemm_/dgemm_) directly. The symbols are declared weak: a
// torch build without a BLAS leaves them null and we fall back to at::mm_out.
#pragma once

#include <ATen/ATen.h>

#include "gemm_avx512.h"

namespace fastvae {
namespace cpu {

// C[M,N] = alpha * op(A)[M,K] @ op(B)[K,N] + beta * C, all row-major.
//   trans_a: A is stored [K,M] (lda >= M) instead of [M,K] (lda >= K)
//   trans_b: B is stored [N,K] (ldb >= K) instead of [K,N] (ldb >= N)
template <typename scalar_t>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K,
          scalar_t alpha, const scalar_t* A, int64_t lda, const scalar_t* B,
          int64_t ldb, scalar_t beta, scalar_t* C, int64_t ldc);

// True when the GEMMs go straight to BLAS (false: the at::mm_out fallback).
bool has_direct_blas();

// The right operand B of many products C = op(A) @ op(B) (the recurrent
// weights of a time loop): prepared once -- packed for the AVX-512 kernel
// when that is the CPU's path -- then multiplied step after step.
template <typename scalar_t>
class RightOperand {
 public:
  // B stored [K, N] (ldb >= N), or [N, K] (ldb >= K) when trans_b.
  RightOperand(bool trans_b, int64_t K, int64_t N, const scalar_t* B, int64_t ldb);
  // C[M, N] = op(A)[M, K] @ op(B) + beta * C.
  void multiply(bool trans_a, int64_t M, const scalar_t* A, int64_t lda, scalar_t beta,
                scalar_t* C, int64_t ldc) const;

 private:
  bool trans_b_;
  int64_t K_, N_;
  const scalar_t* B_;
  int64_t ldb_;
  bool packed_ = false;
  PackedB panels_;  // used for float on AVX-512
};

}  // namespace cpu
}  // namespace fastvae
