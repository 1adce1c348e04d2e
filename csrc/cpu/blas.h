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

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <utility>
#include <vector>

#include "kernels.h"

namespace fastvae {
namespace cpu {

// C[M,N] = alpha * op(A)[M,K] @ op(B)[K,N] + beta * C, all row-major.
//   trans_a: A is stored [K,M] (lda >= M) instead of [M,K] (lda >= K)
//   trans_b: B is stored [N,K] (ldb >= K) instead of [K,N] (ldb >= N)
// For a right operand used once (a product that packs it for itself): a
// float product goes to MKL where blas_first() says so, else to the tile
// kernels (gemm_tiles); a product reusing its right operand (the recurrent
// weights of a time loop) takes RightOperand below.
template <typename scalar_t>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K,
          scalar_t alpha, const scalar_t* A, int64_t lda, const scalar_t* B,
          int64_t ldb, scalar_t beta, scalar_t* C, int64_t ldc);

// C = op(A) @ op(B) + beta * C on the tile kernels, B packed into panels per
// call (tiled_float_gemm() CPUs only): gemm's float path where blas_first()
// is false, and what the _gemm op runs to test the tiles everywhere.
void gemm_tiles(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,
                const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

// True when gemm<float> calls the BLAS inside libtorch rather than the tile
// kernels: an Intel CPU and a torch whose BLAS is MKL (its x86 wheels).
// There MKL's sgemm, which packs its operands as it multiplies, measured
// faster than packing the right operand into panels per call (Xeon, one
// thread): the decoding step's [640, 256] @ [256, 1024] products 8% at AVX2
// and alike at AVX-512 in a stand-alone loop, the step itself 1.11-1.14x ->
// 1.23-1.24x nn.LSTMCell at AVX2 in place (docs/design.md has the rest); on
// the AMD EPYCs MKL's sgemm ran at 55-80 GFLOP/s where the tile kernels
// reached ~110 (AVX-512).
bool blas_first();

// True when the GEMMs the tile kernels do not cover go straight to BLAS (false: at::mm_out).
bool has_direct_blas();

// True when float GEMMs run the tile kernels (an AVX2 or AVX-512 CPU).
bool tiled_float_gemm();

// Blocks of memory the calling thread keeps from call to call for the ops'
// packed operands (Panels below). Those are a few MB each at the models'
// sizes; glibc serves such blocks from the top of its heap and, once a call
// has freed them, trims the top back to the kernel, so every call
// page-faulted them in again: the Sentence-VAE size LSTM fwd+bwd, in a
// process running only fastvae, took ~4,000 page faults (16 MB) and 20% of
// its time per call. pool_acquire returns a block of at least `bytes`
// (64-byte aligned; its size in `capacity`), a cached one when one fits;
// pool_release gives it back. A thread caches at most kPoolBlocks blocks and
// kPoolBytes bytes; a block released past that, or after the thread's pool
// is gone (thread exit), is freed.
constexpr int kPoolBlocks = 8;
constexpr size_t kPoolBytes = size_t(64) << 20;
void* pool_acquire(size_t bytes, size_t& capacity);
void pool_release(void* block, size_t capacity) noexcept;

// A 1-d tensor of n uninitialised values over a block of the calling thread's
// pool; the block goes back to the pool of whichever thread frees the tensor.
// For the multi-MB tensors an op returns and takes back within a training
// step (the LSTM's saved activations): at::empty's blocks of ~1 MB are
// trimmed from the heap top when freed, and page-faulted in again on the next
// call (the DailyDialog-size stack, fwd+bwd: ~670 page faults per call).
at::Tensor pooled_empty(int64_t n, const at::TensorOptions& opts);

// An uninitialised buffer of n values from the thread's pool, given back when
// it is resized past its block or destroyed.
template <typename T>
class PooledBuffer {
 public:
  PooledBuffer() = default;
  PooledBuffer(const PooledBuffer&) = delete;
  PooledBuffer& operator=(const PooledBuffer&) = delete;
  PooledBuffer(PooledBuffer&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)),
        size_(std::exchange(other.size_, 0)),
        capacity_(std::exchange(other.capacity_, 0)) {}
  ~PooledBuffer() { reset(); }
  // n values; the old contents are not kept.
  void resize(size_t n) {
    if (n * sizeof(T) > capacity_) {
      reset();
      data_ = static_cast<T*>(pool_acquire(n * sizeof(T), capacity_));
    }
    size_ = n;
  }
  void reset() noexcept {
    if (data_ != nullptr) pool_release(data_, capacity_);
    data_ = nullptr;
    size_ = capacity_ = 0;
  }
  T* data() { return data_; }
  const T* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  T* data_ = nullptr;
  size_t size_ = 0, capacity_ = 0;
};

// Panels someone else owns: K rows each, panel stride ps (>= K * 32), row
// stride ks within a panel (32). A row-major [K, N] matrix with N a multiple
// of 32 is such a view as it lies (rows_as_panels): ps = 32, ks = its row
// stride -- a right operand read in place, no copy.
template <typename scalar_t>
struct PanelView {
  const scalar_t* data;
  int64_t K, N, ps;
  int64_t ks = kPanelWidth;
};

// The row-major [K, N] matrix B (row stride ldb >= N, N a multiple of 32) as panels.
template <typename scalar_t>
PanelView<scalar_t> rows_as_panels(const scalar_t* B, int64_t K, int64_t N, int64_t ldb) {
  TORCH_CHECK(N % kPanelWidth == 0 && ldb >= N, "fastvae: internal error: ", N, " columns (row stride ", ldb,
              ") read in place as panels");
  return {B, K, N, kPanelWidth, ldb};
}

// A K x N matrix in panels of kPanelWidth columns (kernels.h): panel p holds
// columns [32p, 32p + 32) as K rows of 32 values, zero past N.
template <typename scalar_t>
struct Panels {
  int64_t K = 0, N = 0;
  PooledBuffer<scalar_t> data;  // written in full by pack_panels
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
//
// The buffer starts on a cache line (64 bytes), as the pool's blocks and
// at::empty's do. A std::vector's storage (glibc: 16 bytes past a line, for
// a large block) made every row the kernels read of it straddle lines:
// the packed A tiles of every tile GEMM, the LSTM's step buffers and its gate
// gradients, which the AVX2 weight-gradient product reads in place.
template <typename scalar_t>
class AlignedScratch {
 public:
  AlignedScratch() = default;
  AlignedScratch(const AlignedScratch&) = delete;
  AlignedScratch& operator=(const AlignedScratch&) = delete;
  ~AlignedScratch() { std::free(data_); }
  // At least n values; grows as std::vector::resize does (the old values
  // kept, the new ones zero).
  scalar_t* reserve(size_t n) {
    if (n > size_) {
      const size_t bytes = (std::max<size_t>(n, 1) * sizeof(scalar_t) + 63) / 64 * 64;
      auto* grown = static_cast<scalar_t*>(std::aligned_alloc(64, bytes));
      if (grown == nullptr) throw std::bad_alloc();
      if (size_ > 0) std::memcpy(grown, data_, size_ * sizeof(scalar_t));
      std::memset(static_cast<void*>(grown + size_), 0, (n - size_) * sizeof(scalar_t));
      std::free(data_);
      data_ = grown;
      size_ = n;
    }
    return data_;
  }

 private:
  scalar_t* data_ = nullptr;
  size_t size_ = 0;
};

template <typename scalar_t, typename Tag>
scalar_t* thread_scratch(size_t n) {
  static thread_local AlignedScratch<scalar_t> buffer;
  return buffer.reserve(n);
}

// C[M, N] = op(A)[M, K] @ Bp + beta * C with the tile kernels (A stored [M, K], or [K, M] when trans_a).
void gemm_panels(bool trans_a, int64_t M, const float* A, int64_t lda, const PanelView<float>& Bp, float beta,
                 float* C, int64_t ldc);

// C[M, N] = A @ Bp + beta * C with A [M, K] itself in panels over its depth
// (Ap: M rows per panel, N = K columns; A(r, k) at Ap.data[(k / 32) * Ap.ps +
// r * 32 + k % 32]) -- a matrix written once in panels serves as either operand.
void gemm_panels(const PanelView<float>& Ap, const PanelView<float>& Bp, float beta, float* C, int64_t ldc);

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
  // C = A @ op(B) + beta * C with A in panels (gemm_panels above; float on
  // the tile kernels only).
  void multiply(const PanelView<scalar_t>& A, scalar_t beta, scalar_t* C, int64_t ldc) const;

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
