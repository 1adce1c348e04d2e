#include "blas.h"

#include <limits>

extern "C" {
// Fortran BLAS, LP64 (int) interface, as exported by libtorch_cpu.
void sgemm_(const char* transa, const char* transb, const int* m, const int* n,
            const int* k, const float* alpha, const float* a, const int* lda,
            const float* b, const int* ldb, const float* beta, float* c,
            const int* ldc) __attribute__((weak));
void dgemm_(const char* transa, const char* transb, const int* m, const int* n,
            const int* k, const double* alpha, const double* a, const int* lda,
            const double* b, const int* ldb, const double* beta, double* c,
            const int* ldc) __attribute__((weak));
}

namespace fastvae {
namespace cpu {
namespace {

bool fits_int(int64_t v) { return v <= std::numeric_limits<int>::max(); }

// Fallback through ATen: wraps the raw buffers as (strided) tensors.
template <typename scalar_t>
void gemm_aten(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K,
               scalar_t alpha, const scalar_t* A, int64_t lda,
               const scalar_t* B, int64_t ldb, scalar_t beta, scalar_t* C,
               int64_t ldc) {
  auto opts = at::TensorOptions().dtype(c10::CppTypeToScalarType<scalar_t>::value);
  auto a = trans_a ? at::from_blob(const_cast<scalar_t*>(A), {M, K}, {1, lda}, opts)
                   : at::from_blob(const_cast<scalar_t*>(A), {M, K}, {lda, 1}, opts);
  auto b = trans_b ? at::from_blob(const_cast<scalar_t*>(B), {K, N}, {1, ldb}, opts)
                   : at::from_blob(const_cast<scalar_t*>(B), {K, N}, {ldb, 1}, opts);
  auto c = at::from_blob(C, {M, N}, {ldc, 1}, opts);
  if (beta == scalar_t(0)) {
    at::mm_out(c, a, b);
    if (alpha != scalar_t(1)) c.mul_(alpha);
  } else {
    c.addmm_(a, b, beta, alpha);
  }
}

}  // namespace

bool has_direct_blas() { return sgemm_ != nullptr && dgemm_ != nullptr; }

// Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T, so the
// Fortran call swaps the operands and the M/N roles.
template <>
void gemm<float>(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K,
                 float alpha, const float* A, int64_t lda, const float* B,
                 int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  if (sgemm_ == nullptr || !fits_int(M) || !fits_int(N) || !fits_int(K) ||
      !fits_int(lda) || !fits_int(ldb) || !fits_int(ldc) || K == 0) {
    gemm_aten<float>(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    return;
  }
  const char ta = trans_b ? 'T' : 'N';
  const char tb = trans_a ? 'T' : 'N';
  const int m = N, n = M, k = K, la = ldb, lb = lda, lc = ldc;
  sgemm_(&ta, &tb, &m, &n, &k, &alpha, B, &la, A, &lb, &beta, C, &lc);
}

template <>
void gemm<double>(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K,
                  double alpha, const double* A, int64_t lda, const double* B,
                  int64_t ldb, double beta, double* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  if (dgemm_ == nullptr || !fits_int(M) || !fits_int(N) || !fits_int(K) ||
      !fits_int(lda) || !fits_int(ldb) || !fits_int(ldc) || K == 0) {
    gemm_aten<double>(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    return;
  }
  const char ta = trans_b ? 'T' : 'N';
  const char tb = trans_a ? 'T' : 'N';
  const int m = N, n = M, k = K, la = ldb, lb = lda, lc = ldc;
  dgemm_(&ta, &tb, &m, &n, &k, &alpha, B, &la, A, &lb, &beta, C, &lc);
}

}  // namespace cpu
}  // namespace fastvae
