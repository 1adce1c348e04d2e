#include "blas.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>

#include "isa.h"

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
// Exported by MKL only: tells that sgemm_ above is MKL's.
void MKL_Get_Version_String(char* buffer, int len) __attribute__((weak));
}

namespace fastvae {
namespace cpu {
namespace {

bool fits_int(int64_t v) { return v <= std::numeric_limits<int>::max(); }

struct GemmLeftTiles;  // thread_scratch tag: the tiles of A that gemm_panels packs

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

// Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T, so the
// Fortran call swaps the operands and the M/N roles.
template <typename scalar_t, typename Fn>
void gemm_blas(Fn fn, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, scalar_t alpha,
               const scalar_t* A, int64_t lda, const scalar_t* B, int64_t ldb, scalar_t beta, scalar_t* C,
               int64_t ldc) {
  if (fn == nullptr || !fits_int(M) || !fits_int(N) || !fits_int(K) || !fits_int(lda) || !fits_int(ldb) ||
      !fits_int(ldc) || K == 0) {
    gemm_aten<scalar_t>(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    return;
  }
  const char ta = trans_b ? 'T' : 'N';
  const char tb = trans_a ? 'T' : 'N';
  const int m = N, n = M, k = K, la = ldb, lb = lda, lc = ldc;
  fn(&ta, &tb, &m, &n, &k, &alpha, B, &la, A, &lb, &beta, C, &lc);
}

}  // namespace

bool has_direct_blas() { return sgemm_ != nullptr && dgemm_ != nullptr; }

bool tiled_float_gemm() { return cpu_isa() != Isa::Generic; }

namespace {

// Rows [0, K) of one panel (row k at panel + k * 32) from B's columns
// [n0, n0 + width) (B stored [K, N], or [N, K] when trans_b), zero past width.
template <typename scalar_t>
void pack_panel_rows(bool trans_b, int64_t K, int64_t n0, int64_t width, const scalar_t* B, int64_t ldb,
                     scalar_t* panel) {
  if (trans_b) {  // B stored [N, K]: the panel's rows of B transposed
    kernels<scalar_t>().transpose(width, K, B + n0 * ldb, ldb, panel, kPanelWidth);
  } else if (width == kPanelWidth) {  // B stored [K, N], a whole panel: a fixed-size copy per row (inlined, no call)
    for (int64_t k = 0; k < K; ++k)
      std::memcpy(panel + k * kPanelWidth, B + k * ldb + n0, kPanelWidth * sizeof(scalar_t));
  } else {  // B stored [K, N]
    for (int64_t k = 0; k < K; ++k) std::copy(B + k * ldb + n0, B + k * ldb + n0 + width, panel + k * kPanelWidth);
  }
  if (width < kPanelWidth) {  // zero past N
    for (int64_t k = 0; k < K; ++k)
      std::fill(panel + k * kPanelWidth + width, panel + (k + 1) * kPanelWidth, scalar_t(0));
  }
}

}  // namespace

// ------------------------------------------------------------ the pool --

namespace {

constexpr size_t kPoolGrain = size_t(64) << 10;  // block sizes rounded up to 64 KB: near sizes share blocks

struct Pool {
  void* block[kPoolBlocks];
  size_t capacity[kPoolBlocks];
  int count = 0;
  size_t bytes = 0;
  void take(int i) {  // removes entry i (order does not matter)
    bytes -= capacity[i];
    --count;
    block[i] = block[count];
    capacity[i] = capacity[count];
  }
  ~Pool();
};

// Set when the thread's pool has been destroyed (thread exit), so a buffer
// destroyed later (another thread_local) frees its block instead of caching it.
thread_local bool pool_gone = false;
thread_local Pool pool;

Pool::~Pool() {
  for (int i = 0; i < count; ++i) std::free(block[i]);
  count = 0;
  bytes = 0;
  pool_gone = true;
}

}  // namespace

void* pool_acquire(size_t bytes, size_t& capacity) {
  if (!pool_gone) {
    Pool& p = pool;
    int best = -1;  // the smallest cached block that fits
    for (int i = 0; i < p.count; ++i)
      if (p.capacity[i] >= bytes && (best < 0 || p.capacity[i] < p.capacity[best])) best = i;
    if (best >= 0) {
      void* block = p.block[best];
      capacity = p.capacity[best];
      p.take(best);
      return block;
    }
  }
  const size_t size = (std::max<size_t>(bytes, 1) + kPoolGrain - 1) / kPoolGrain * kPoolGrain;
  void* block = std::aligned_alloc(64, size);
  if (block == nullptr) throw std::bad_alloc();
  capacity = size;
  return block;
}

void pool_release(void* block, size_t capacity) noexcept {
  if (pool_gone || capacity > kPoolBytes) {
    std::free(block);
    return;
  }
  Pool& p = pool;
  // While the pool is full, the smallest block of the pool and this one goes.
  while (p.count > 0 && (p.count == kPoolBlocks || p.bytes + capacity > kPoolBytes)) {
    int smallest = 0;
    for (int i = 1; i < p.count; ++i)
      if (p.capacity[i] < p.capacity[smallest]) smallest = i;
    if (capacity <= p.capacity[smallest]) {
      std::free(block);
      return;
    }
    std::free(p.block[smallest]);
    p.take(smallest);
  }
  p.block[p.count] = block;
  p.capacity[p.count] = capacity;
  ++p.count;
  p.bytes += capacity;
}

at::Tensor pooled_empty(int64_t n, const at::TensorOptions& opts) {
  TORCH_CHECK(n >= 0, "fastvae: internal error: pooled_empty of ", n, " values");
  size_t capacity = 0;
  void* block = pool_acquire(static_cast<size_t>(n) * opts.dtype().itemsize(), capacity);
  return at::from_blob(block, {n}, [capacity](void* p) { pool_release(p, capacity); }, opts);
}

// ----------------------------------------------------------- the panels --

template <typename scalar_t>
void pack_panels(bool trans_b, int64_t K, int64_t N, const scalar_t* B, int64_t ldb, Panels<scalar_t>& out,
                 int64_t K_rows) {
  out.K = std::max(K, K_rows);
  out.N = N;
  // Every value is written below (the zero padding included): no fill first.
  out.data.resize(static_cast<size_t>(out.count() * out.stride()));
  for (int64_t p = 0; p < out.count(); ++p) {
    const int64_t n0 = p * kPanelWidth, width = std::min<int64_t>(kPanelWidth, N - n0);
    scalar_t* panel = out.data.data() + p * out.stride();
    pack_panel_rows(trans_b, K, n0, width, B, ldb, panel);
    std::fill(panel + K * kPanelWidth, panel + out.stride(), scalar_t(0));
  }
}

template void pack_panels<float>(bool, int64_t, int64_t, const float*, int64_t, Panels<float>&, int64_t);
template void pack_panels<double>(bool, int64_t, int64_t, const double*, int64_t, Panels<double>&, int64_t);

namespace {

// [top^T ; bottom^T] in panels (K = top.K + bottom.K rows each).
template <typename scalar_t>
void pack_panels_stacked(int64_t N, const DepthPart<scalar_t>& top, const DepthPart<scalar_t>& bottom,
                         Panels<scalar_t>& out) {
  out.K = top.K + bottom.K;
  out.N = N;
  out.data.resize(static_cast<size_t>(out.count() * out.stride()));
  for (int64_t p = 0; p < out.count(); ++p) {
    const int64_t n0 = p * kPanelWidth, width = std::min<int64_t>(kPanelWidth, N - n0);
    scalar_t* panel = out.data.data() + p * out.stride();
    pack_panel_rows(true, top.K, n0, width, top.B, top.ldb, panel);
    pack_panel_rows(true, bottom.K, n0, width, bottom.B, bottom.ldb, panel + top.K * kPanelWidth);
  }
}

}  // namespace

namespace {

// C[M, N] = A @ Bp + beta * C, A(r, k) at A[r * a_rs + k * a_cs] (a_ps = 0)
// or in panels over its depth (a_ps > 0, a_rs = 32, a_cs = 1: kernels.h).
void gemm_panels_impl(int64_t M, const float* A, int64_t a_rs, int64_t a_cs, int64_t a_ps, const PanelView<float>& Bp,
                      float beta, float* C, int64_t ldc) {
  const int64_t K = Bp.K, N = Bp.N;
  if (M == 0 || N == 0) return;
  if (K == 0) {  // empty sum: C = beta * C
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[i * ldc + j];
    return;
  }
  const KernelSet<float>& ks = kernels<float>();
  // Panels up to 70% of L2 stay there through the product (the rest holds
  // A's tiles and C's rows): 1.2-1.3 MB of the 2 MB on a Xeon.
  const int64_t resident = l2_cache_bytes() / 10 * 7;
  auto rows = [&](int64_t m0, int64_t m1) {
    float* scratch = thread_scratch<float, GemmLeftTiles>(static_cast<size_t>(ks.gemm_scratch(m1 - m0, K)));
    ks.gemm(m1 - m0, N, K, A + m0 * a_rs, a_rs, a_cs, a_ps, Bp.data, Bp.ps, Bp.ks, beta, C + m0 * ldc, ldc,
            scratch, resident);
  };
  // Split rows over threads only when each task has real work (~2 MFLOP).
  const int64_t tile = ks.tile_rows;
  const int64_t grain_tiles = std::max<int64_t>(1, 2000000 / std::max<int64_t>(2 * K * N * tile, 1) + 1);
  const int64_t tiles = (M + tile - 1) / tile;
  if (tiles <= grain_tiles || at::get_num_threads() == 1) {
    rows(0, M);
    return;
  }
  at::parallel_for(0, tiles, grain_tiles, [&](int64_t t0, int64_t t1) { rows(t0 * tile, std::min(M, t1 * tile)); });
}

}  // namespace

void gemm_panels(bool trans_a, int64_t M, const float* A, int64_t lda, const PanelView<float>& Bp, float beta,
                 float* C, int64_t ldc) {
  gemm_panels_impl(M, A, trans_a ? 1 : lda, trans_a ? lda : 1, 0, Bp, beta, C, ldc);
}

void gemm_panels(const PanelView<float>& Ap, const PanelView<float>& Bp, float beta, float* C, int64_t ldc) {
  TORCH_CHECK(Ap.N == Bp.K, "fastvae: internal error: a left operand of depth ", Ap.N, " for panels of depth ", Bp.K);
  TORCH_CHECK(Ap.ks == kPanelWidth, "fastvae: internal error: a left operand in panels is packed (row stride 32)");
  gemm_panels_impl(Ap.K, Ap.data, kPanelWidth, 1, Ap.ps, Bp, beta, C, ldc);
}

bool blas_first() {
  static const bool mkl_on_intel = sgemm_ != nullptr && MKL_Get_Version_String != nullptr && cpu_is_intel();
  return mkl_on_intel;
}

void gemm_tiles(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,
                const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  TORCH_CHECK(tiled_float_gemm(), "fastvae: internal error: the tile GEMM runs on an AVX2 or AVX-512 CPU only");
  if (M == 0 || N == 0) return;
  static thread_local Panels<float> packed;
  pack_panels(trans_b, K, N, B, ldb, packed);
  gemm_panels(trans_a, M, A, lda, packed.view(), beta, C, ldc);
}

template <>
void gemm<float>(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                 int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  if (alpha == 1.0f && tiled_float_gemm() && !blas_first()) {
    gemm_tiles(trans_a, trans_b, M, N, K, A, lda, B, ldb, beta, C, ldc);
    return;
  }
  gemm_blas<float>(sgemm_, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

template <>
void gemm<double>(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, double alpha, const double* A,
                  int64_t lda, const double* B, int64_t ldb, double beta, double* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  gemm_blas<double>(dgemm_, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

template <typename scalar_t>
RightOperand<scalar_t>::RightOperand(bool trans_b, int64_t K, int64_t N, const scalar_t* B, int64_t ldb)
    : trans_b_(trans_b), K_(K), N_(N), B_(B), ldb_(ldb) {
  if constexpr (std::is_same_v<scalar_t, float>) {
    if (tiled_float_gemm()) {
      pack_panels(trans_b, K, N, B, ldb, panels_);
      packed_ = true;
    }
  }
}

template <typename scalar_t>
RightOperand<scalar_t>::RightOperand(int64_t N, const DepthPart<scalar_t>& top, const DepthPart<scalar_t>& bottom)
    : trans_b_(true), K_(top.K + bottom.K), N_(N), B_(nullptr), ldb_(top.K + bottom.K) {
  if constexpr (std::is_same_v<scalar_t, float>) {
    if (tiled_float_gemm()) {
      pack_panels_stacked(N, top, bottom, panels_);
      packed_ = true;
      return;
    }
  }
  TORCH_CHECK(false, "fastvae: internal error: a stacked right operand needs the float tile kernels");
}

template <typename scalar_t>
void RightOperand<scalar_t>::multiply(bool trans_a, int64_t M, const scalar_t* A, int64_t lda,
                                      scalar_t beta, scalar_t* C, int64_t ldc, int64_t k0) const {
  TORCH_CHECK(k0 >= 0 && k0 <= K_, "fastvae: internal error: depth offset ", k0, " outside [0, ", K_, "]");
  if constexpr (std::is_same_v<scalar_t, float>) {
    if (packed_) {
      gemm_panels(trans_a, M, A, lda, panels_.view(k0), beta, C, ldc);
      return;
    }
  }
  const scalar_t* B = B_ + (trans_b_ ? k0 : k0 * ldb_);
  gemm<scalar_t>(trans_a, trans_b_, M, N_, K_ - k0, scalar_t(1), A, lda, B, ldb_, beta, C, ldc);
}

template <typename scalar_t>
void RightOperand<scalar_t>::multiply(const PanelView<scalar_t>& A, scalar_t beta, scalar_t* C, int64_t ldc) const {
  if constexpr (std::is_same_v<scalar_t, float>) {
    if (packed_) {
      gemm_panels(A, panels_.view(), beta, C, ldc);
      return;
    }
  }
  TORCH_CHECK(false, "fastvae: internal error: a left operand in panels needs the float tile kernels");
}

template class RightOperand<float>;
template class RightOperand<double>;

}  // namespace cpu
}  // namespace fastvae
