#include "blas.h"

#include <torch/library.h>

#include <limits>
#include <type_traits>

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
  if (alpha == 1.0f && cpu_isa() == Isa::Avx512) {
    static thread_local PackedB scratch;
    pack_b(trans_b, K, N, B, ldb, scratch);
    gemm_packed(trans_a, M, A, lda, scratch, beta, C, ldc);
    return;
  }
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

template <typename scalar_t>
RightOperand<scalar_t>::RightOperand(bool trans_b, int64_t K, int64_t N, const scalar_t* B,
                                     int64_t ldb)
    : trans_b_(trans_b), K_(K), N_(N), B_(B), ldb_(ldb) {
  if constexpr (std::is_same_v<scalar_t, float>) {
    if (cpu_isa() == Isa::Avx512) {
      pack_b(trans_b, K, N, B, ldb, panels_);
      packed_ = true;
    }
  }
}

template <typename scalar_t>
void RightOperand<scalar_t>::multiply(bool trans_a, int64_t M, const scalar_t* A, int64_t lda,
                                      scalar_t beta, scalar_t* C, int64_t ldc) const {
  if constexpr (std::is_same_v<scalar_t, float>) {
    if (packed_) {
      gemm_packed(trans_a, M, A, lda, panels_, beta, C, ldc);
      return;
    }
  }
  gemm<scalar_t>(trans_a, trans_b_, M, N_, K_, scalar_t(1), A, lda, B_, ldb_, beta, C, ldc);
}

template class RightOperand<float>;
template class RightOperand<double>;

}  // namespace cpu
}  // namespace fastvae

namespace fastvae {
namespace cpu {
namespace {

at::Tensor gemm_op(const at::Tensor& a_in, const at::Tensor& b_in, bool trans_a, bool trans_b) {
  TORCH_CHECK_VALUE(a_in.dim() == 2 && b_in.dim() == 2, "fastvae._gemm: a and b must be 2-D");
  TORCH_CHECK_TYPE(a_in.scalar_type() == b_in.scalar_type() &&
                       (a_in.scalar_type() == at::kFloat || a_in.scalar_type() == at::kDouble),
                   "fastvae._gemm: a and b must both be float32 or both float64");
  const auto a = a_in.contiguous(), b = b_in.contiguous();
  const int64_t M = trans_a ? a.size(1) : a.size(0), K = trans_a ? a.size(0) : a.size(1);
  const int64_t N = trans_b ? b.size(0) : b.size(1);
  TORCH_CHECK_VALUE((trans_b ? b.size(1) : b.size(0)) == K, "fastvae._gemm: inner sizes differ");
  auto c = at::empty({M, N}, a.options());
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "fastvae_gemm", [&] {
    gemm<scalar_t>(trans_a, trans_b, M, N, K, 1, a.data_ptr<scalar_t>(), a.size(1),
                   b.data_ptr<scalar_t>(), b.size(1), 0, c.data_ptr<scalar_t>(), N);
  });
  return c;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastvae, CPU, m) { m.impl("_gemm", &gemm_op); }

}  // namespace cpu
}  // namespace fastvae
