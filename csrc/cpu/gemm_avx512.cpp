// Single-precision GEMM for AVX-512 CPUs: packed right operand + 12x32
// register-blocked micro-kernel.
//
// Why our own: MKL picks a slow generic path on some CPUs (measured ~55-80
// GFLOP/s single-thread on the AVX-512 AMD machines we develop on, where
// oneDNN's JIT reaches ~100-120), and any library call costs microseconds of
// overhead that the per-step GEMMs of a recurrent loop (64x32x128) cannot
// afford. The recurrent weights are packed once per sequence and reused by
// every step.
//
// Packed layout of B [K, N] (row-major logical): panels of NR = 32 columns,
//   data[(panel * K + k) * 32 + j] = B[k, panel * 32 + j], zero past N.
#include "gemm_avx512.h"

#include <ATen/Parallel.h>

#include <algorithm>

#ifdef FASTVAE_X86_DISPATCH
#include <immintrin.h>
#endif

namespace fastvae {
namespace cpu {

PanelsView panels(const PackedB& Bp, int64_t col0, int64_t ncols) {
  TORCH_CHECK(col0 % kPanel == 0 && col0 + ncols <= Bp.N, "fastvae: bad panel range");
  return {Bp.data.data() + (col0 / kPanel) * Bp.K * kPanel, Bp.K, ncols};
}

void pack_b(bool trans_b, int64_t K, int64_t N, const float* B, int64_t ldb, PackedB& out) {
  const int64_t panels = (N + kPanel - 1) / kPanel;
  out.K = K;
  out.N = N;
  out.data.assign(static_cast<size_t>(panels * K * kPanel), 0.0f);
  float* dst = out.data.data();
  for (int64_t p = 0; p < panels; ++p) {
    const int64_t n0 = p * kPanel, width = std::min<int64_t>(kPanel, N - n0);
    float* panel = dst + p * K * kPanel;
    if (trans_b) {  // B stored [N, K]
      for (int64_t j = 0; j < width; ++j) {
        const float* src = B + (n0 + j) * ldb;
        for (int64_t k = 0; k < K; ++k) panel[k * kPanel + j] = src[k];
      }
    } else {  // B stored [K, N]
      for (int64_t k = 0; k < K; ++k) std::copy(B + k * ldb + n0, B + k * ldb + n0 + width, panel + k * kPanel);
    }
  }
}

#ifdef FASTVAE_X86_DISPATCH
namespace {

constexpr int64_t kRows = 12;    // MR: rows of C per micro-kernel call
constexpr int64_t kDepth = 256;  // KC: depth of one pass (keeps a B panel block in L1)

// C[MR, 32] (masked to the valid columns) = beta * C + A[MR, kc] @ Bp[kc, 32].
// A element (r, k) lives at A[r * a_rs + k * a_cs], so both A and A^T work.
// ACCUMULATE: C = beta * C + product; otherwise C = product (C is not read).
// A compile-time switch keeps the accumulators in registers through the
// epilogue (a run-time beta branch made the compiler spill all 24).
template <int MR, bool ACCUMULATE>
FASTVAE_ISA_AVX512 void micro_kernel(int64_t kc, const float* A, int64_t a_rs, int64_t a_cs,
                                     const float* Bp, float* C, int64_t ldc, float beta,
                                     __mmask16 m0, __mmask16 m1) {
  __m512 acc0[MR], acc1[MR];
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) {
    acc0[r] = _mm512_setzero_ps();
    acc1[r] = _mm512_setzero_ps();
  }
  for (int64_t k = 0; k < kc; ++k) {
    const __m512 b0 = _mm512_loadu_ps(Bp + k * kPanel);
    const __m512 b1 = _mm512_loadu_ps(Bp + k * kPanel + 16);
    const float* a = A + k * a_cs;
  #pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) {
      const __m512 av = _mm512_set1_ps(a[r * a_rs]);
      acc0[r] = _mm512_fmadd_ps(av, b0, acc0[r]);
      acc1[r] = _mm512_fmadd_ps(av, b1, acc1[r]);
    }
  }
  if constexpr (ACCUMULATE) {
    const __m512 bv = _mm512_set1_ps(beta);
  #pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) {
      float* c = C + r * ldc;
      acc0[r] = _mm512_fmadd_ps(bv, _mm512_maskz_loadu_ps(m0, c), acc0[r]);
      acc1[r] = _mm512_fmadd_ps(bv, _mm512_maskz_loadu_ps(m1, c + 16), acc1[r]);
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) {
    _mm512_mask_storeu_ps(C + r * ldc, m0, acc0[r]);
    _mm512_mask_storeu_ps(C + r * ldc + 16, m1, acc1[r]);
  }
}

using Kernel = void (*)(int64_t, const float*, int64_t, int64_t, const float*, float*, int64_t,
                        float, __mmask16, __mmask16);
template <bool ACCUMULATE>
constexpr Kernel kernel_for(int rows) {
  switch (rows) {
    case 1: return micro_kernel<1, ACCUMULATE>;
    case 2: return micro_kernel<2, ACCUMULATE>;
    case 3: return micro_kernel<3, ACCUMULATE>;
    case 4: return micro_kernel<4, ACCUMULATE>;
    case 5: return micro_kernel<5, ACCUMULATE>;
    case 6: return micro_kernel<6, ACCUMULATE>;
    case 7: return micro_kernel<7, ACCUMULATE>;
    case 8: return micro_kernel<8, ACCUMULATE>;
    case 9: return micro_kernel<9, ACCUMULATE>;
    case 10: return micro_kernel<10, ACCUMULATE>;
    case 11: return micro_kernel<11, ACCUMULATE>;
    default: return micro_kernel<12, ACCUMULATE>;
  }
}

// kKernels[accumulate][rows]
const Kernel kKernels[2][kRows + 1] = {
    {nullptr, kernel_for<false>(1), kernel_for<false>(2), kernel_for<false>(3), kernel_for<false>(4),
     kernel_for<false>(5), kernel_for<false>(6), kernel_for<false>(7), kernel_for<false>(8),
     kernel_for<false>(9), kernel_for<false>(10), kernel_for<false>(11), kernel_for<false>(12)},
    {nullptr, kernel_for<true>(1), kernel_for<true>(2), kernel_for<true>(3), kernel_for<true>(4),
     kernel_for<true>(5), kernel_for<true>(6), kernel_for<true>(7), kernel_for<true>(8),
     kernel_for<true>(9), kernel_for<true>(10), kernel_for<true>(11), kernel_for<true>(12)}};

__mmask16 lane_mask(int64_t valid) {
  if (valid >= 16) return static_cast<__mmask16>(0xFFFF);
  if (valid <= 0) return 0;
  return static_cast<__mmask16>((1u << valid) - 1u);
}

// Copies rows [m0, m1) x depth [k0, k0 + kc) of op(A) into micro-panels of
// kRows rows, each [kc][kRows] (zero rows past m1): the micro-kernel then reads
// A sequentially instead of from kRows rows that may share one cache set.
void pack_a(int64_t m0, int64_t m1, int64_t k0, int64_t kc, bool trans_a, const float* A,
            int64_t lda, float* out) {
  for (int64_t i = m0; i < m1; i += kRows) {
    const int64_t rows = std::min(kRows, m1 - i);
    float* panel = out + (i - m0) * kc;
    if (trans_a) {  // A stored [K, M]: kRows contiguous values per k
      for (int64_t k = 0; k < kc; ++k) {
        const float* src = A + (k0 + k) * lda + i;
        float* dst = panel + k * kRows;
        for (int64_t r = 0; r < rows; ++r) dst[r] = src[r];
        for (int64_t r = rows; r < kRows; ++r) dst[r] = 0.0f;
      }
    } else {
      for (int64_t r = 0; r < rows; ++r) {
        const float* src = A + (i + r) * lda + k0;
        for (int64_t k = 0; k < kc; ++k) panel[k * kRows + r] = src[k];
      }
      for (int64_t r = rows; r < kRows; ++r)
        for (int64_t k = 0; k < kc; ++k) panel[k * kRows + r] = 0.0f;
    }
  }
}

// A is packed when its rows would be read with a large stride: transposed A
// (kRows values per k, lda apart) or rows >= 2 KB apart, which share L1 sets.
// Small row-major A (a recurrent state [B, H]) is read in place: packing
// would cost as much as the product.
bool should_pack_a(bool trans_a, int64_t lda) { return trans_a || lda >= 512; }

// Rows [m0, m1) of C over all panels and depth passes.
void gemm_rows(int64_t m0, int64_t m1, bool trans_a, const float* A, int64_t lda,
               PanelsView Bp, float beta, float* C, int64_t ldc) {
  const int64_t K = Bp.K, N = Bp.N;
  const int64_t panels = (N + kPanel - 1) / kPanel;
  const bool packed = should_pack_a(trans_a, lda);
  static thread_local std::vector<float> a_panels;
  if (packed) {
    const int64_t row_blocks = (m1 - m0 + kRows - 1) / kRows;
    a_panels.resize(static_cast<size_t>(row_blocks * kRows * std::min(kDepth, K)));
  }
  for (int64_t k0 = 0; k0 < K; k0 += kDepth) {
    const int64_t kc = std::min(kDepth, K - k0);
    const float pass_beta = k0 == 0 ? beta : 1.0f;
    if (packed) pack_a(m0, m1, k0, kc, trans_a, A, lda, a_panels.data());
    for (int64_t p = 0; p < panels; ++p) {
      const int64_t n0 = p * kPanel;
      const __mmask16 mk0 = lane_mask(N - n0), mk1 = lane_mask(N - n0 - 16);
      const float* panel = Bp.data + (p * K + k0) * kPanel;
      for (int64_t i = m0; i < m1; i += kRows) {
        const int64_t rows = std::min(kRows, m1 - i);
        float* c = C + i * ldc + n0;
        const Kernel kernel = kKernels[pass_beta != 0.0f][rows];
        if (packed) {
          kernel(kc, a_panels.data() + (i - m0) * kc, 1, kRows, panel, c, ldc, pass_beta,
                         mk0, mk1);
        } else {
          kernel(kc, A + i * lda + k0, lda, 1, panel, c, ldc, pass_beta, mk0, mk1);
        }
      }
    }
  }
}

}  // namespace

void gemm_packed(bool trans_a, int64_t M, const float* A, int64_t lda, const PackedB& Bp,
                 float beta, float* C, int64_t ldc) {
  if (M == 0 || Bp.N == 0) return;
  if (Bp.K == 0) {  // empty sum: C = beta * C
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < Bp.N; ++j) C[i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[i * ldc + j];
    return;
  }
  // Split rows over threads only when each task has real work (~2 MFLOP).
  const int64_t flop_per_row = 2 * Bp.K * Bp.N;
  const int64_t grain = std::max<int64_t>(kRows, ((2000000 / std::max<int64_t>(flop_per_row, 1)) / kRows + 1) * kRows);
  const PanelsView all = panels(Bp, 0, Bp.N);
  if (M <= grain) {
    gemm_rows(0, M, trans_a, A, lda, all, beta, C, ldc);
    return;
  }
  at::parallel_for(0, (M + kRows - 1) / kRows, grain / kRows, [&](int64_t b0, int64_t b1) {
    gemm_rows(b0 * kRows, std::min(M, b1 * kRows), trans_a, A, lda, all, beta, C, ldc);
  });
}

void gemm_panels(int64_t M, const float* A, int64_t lda, PanelsView B, float beta, float* C,
                 int64_t ldc) {
  if (M == 0 || B.N == 0 || B.K == 0) return;
  gemm_rows(0, M, false, A, lda, B, beta, C, ldc);
}

#else  // no x86 dispatch: never called (cpu_isa() is Generic)

void gemm_packed(bool, int64_t, const float*, int64_t, const PackedB&, float, float*, int64_t) {
  TORCH_CHECK(false, "fastvae: the AVX-512 GEMM is not compiled in this build");
}

void gemm_panels(int64_t, const float*, int64_t, PanelsView, float, float*, int64_t) {
  TORCH_CHECK(false, "fastvae: the AVX-512 GEMM is not compiled in this build");
}

#endif

}  // namespace cpu
}  // namespace fastvae
