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

}  // namespace cpu
}  // namespace fastvae
