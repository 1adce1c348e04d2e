// Row-major GEMM on raw pointers for the CPU kernels.
//
// The recurrent loops issue one small GEMM per time step (64x32x128 at the
// paper's sizes); going through the ATen dispatcher costs microseconds per
// call, as much as the product itself. So float GEMMs run fastvae's own
// register-tiled kernels (csrc/cpu/tile_kernels.h) on AVX2 and AVX-512 CPUs,
// with the right operand packed into panels; double GEMMs, and float GEMMs
// on CPUs without AVX2, call the BLAS that libtorch_cpu carries (the Fortran
// symbols sgemm_/dgemm_ of MKL or OpenBLAS, declared weak: a torch build
// without them falls back to at::mm_out).
#pragma once

#include <ATen/ATen.h>

#include <memory>
#include <utility>
#include <vector>

#include "kernels.h"

namespace fastvae {
namespace cpu {

// C[M,N] = alpha * op(A)[M,K] @ op(B)[K,N] + beta * C, all row-major.
//   trans_a: A is stored [K,M] (lda >= M) instead of [M,K] (lda >= K)
//   trans_b: B is stored [N,K] (ldb >= K) instead of [K,N] (ldb >= N)
template <typename scalar_t>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K,
          scalar_t alpha, const scalar_t* A, int64_t lda, const scalar_t* B,
          int64_t ldb, scalar_t beta, scalar_t* C, int64_t ldc);

// True when the GEMMs the tile kernels do not cover go straight to BLAS (false: at::mm_out).
bool has_direct_blas();

// True when float GEMMs run the tile kernels (an AVX2 or AVX-512 CPU).
bool tiled_float_gemm();

// An allocator whose resize() leaves new values uninitialised: a buffer that
// is written in full right after (packed panels) skips a pass of zeroes.
template <typename T>
struct UninitAllocator : std::allocator<T> {
  template <typename U>
  struct rebind {
    using other = UninitAllocator<U>;
  };
  UninitAllocator() = default;
  template <typename U>
  UninitAllocator(const UninitAllocator<U>&) noexcept {}
  template <typename U>
  void construct(U* p) noexcept {
    ::new (static_cast<void*>(p)) U;
  }
  template <typename U, typename... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
};

// Panels someone else owns: K rows each, panel stride ps (>= K * 32).
template <typename scalar_t>
struct PanelView {
  const scalar_t* data;
  int64_t K, N, ps;
};

// A K x N matrix in panels of kPanelWidth columns (kernels.h): panel p holds
// columns [32p, 32p + 32) as K rows of 32 values, zero past N.
template <typename scalar_t>
struct Panels {
  int64_t K = 0, N = 0;
  std::vector<scalar_t, UninitAllocator<scalar_t>> data;  // written in full by pack_panels
  int64_t stride() const { return K * kPanelWidth; }
  int64_t count() const { return (N + kPanelWidth - 1) / kPanelWidth; }
  // Rows [k0, K) of every panel.
  PanelView<scalar_t> view(int64_t k0 = 0) const { return {data.data() + k0 * kPanelWidth, K - k0, N, stride()}; }
};

// Packs B (stored [K, N], or [N, K] when trans_b, leading dimension ldb);
// with K_rows > K each panel gets K_rows rows, zero past K.
template <typename scalar_t>
void pack_panels(bool trans_b, int64_t K, int64_t N, const scalar_t* B, int64_t ldb, Panels<scalar_t>& out,
                 int64_t K_rows = 0);

// One of the matrices stacked along the depth of a right operand: stored [N, K]
// (row stride ldb >= K), taken transposed -- a weight matrix of nn.Linear's layout.
template <typename scalar_t>
struct DepthPart {
  const scalar_t* B;
  int64_t K, ldb;
};

// Scratch of at least n values for the calling thread, reused from call to
// call (a fresh multi-MB buffer per call costs its page faults every call).
// Each Tag type names a buffer of its own, so a caller can hold several at
// once; the buffer lives until the thread ends and keeps its largest size.
template <typename scalar_t, typename Tag>
scalar_t* thread_scratch(size_t n) {
  static thread_local std::vector<scalar_t> buffer;
  if (buffer.size() < n) buffer.resize(n);
  return buffer.data();
}

// C[M, N] = op(A)[M, K] @ Bp + beta * C with the tile kernels (A stored [M, K], or [K, M] when trans_a).
void gemm_panels(bool trans_a, int64_t M, const float* A, int64_t lda, const PanelView<float>& Bp, float beta,
                 float* C, int64_t ldc);

// The right operand B of many products C = op(A) @ op(B) (the recurrent
// weights of a time loop): prepared once -- packed into panels when the tile
// kernels run float GEMMs -- then multiplied step after step.
template <typename scalar_t>
class RightOperand {
 public:
  // B stored [K, N] (ldb >= N), or [N, K] (ldb >= K) when trans_b.
  RightOperand(bool trans_b, int64_t K, int64_t N, const scalar_t* B, int64_t ldb);
  // [top^T ; bottom^T]: two transposed matrices stacked along the depth (K =
  // top.K + bottom.K), multiplied as one -- an LSTM step's [h | x] @ [w_hh | w_ih]^T
  // (one product of depth H + E: its result stays in the registers, where two
  // products write it out and read it back). Float on the tile kernels only
  // (tiled_float_gemm()): the panels are the stacked copy.
  RightOperand(int64_t N, const DepthPart<scalar_t>& top, const DepthPart<scalar_t>& bottom);
  // C[M, N] = op(A)[M, K] @ op(B) + beta * C; with k0 > 0 the product over
  // depth [k0, K) only (op(A) is then [M, K - k0]: the steps past k0).
  void multiply(bool trans_a, int64_t M, const scalar_t* A, int64_t lda, scalar_t beta,
                scalar_t* C, int64_t ldc, int64_t k0 = 0) const;

 private:
  bool trans_b_;
  int64_t K_, N_;
  const scalar_t* B_;
  int64_t ldb_;
  bool packed_ = false;
  Panels<scalar_t> panels_;
};

}  // namespace cpu
}  // namespace fastvae
