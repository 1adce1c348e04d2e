// Register-tiled kernels of the CPU ops, written once over a vector type V
// (csrc/cpu/simd.h) and compiled once per ISA level: kernels_generic.cpp,
// kernels_avx2.cpp and kernels_avx512.cpp include this header inside their own
// namespace and export the entry points through a KernelSet (kernels.h).
//
// Everything here works on raw pointers and plain loops: no std:: templates,
// so nothing compiled for one ISA is shared with (or linked into) another.
//
// The common operand: PANELS of 32 columns (kPanelWidth). A K x N matrix in
// panels stores column block p (columns 32p .. 32p+31) as K rows of 32
// contiguous values, zero past N: element (k, 32p + j) at P[p * ps + k * 32 + j]
// with ps the panel stride (K * 32 when packed tight). Three things have this
// form: a packed GEMM right operand (blas.h), the transposed hidden rows of
// the vocabulary heads, and the "token panels" of the fused linear +
// cross-entropy (rows = vocabulary words, columns = tokens). The GEMM's
// right operand may also be a row-major [K, N] matrix read in place (N a
// multiple of 32): panel stride 32 and row stride ks = N instead of 32.
//
// The micro-kernel holds an MR x (NV * W) tile of the result in registers and
// runs the whole depth K over it: per step NV loads of a panel row, MR
// broadcasts of A, MR * NV FMAs. Tiles: AVX-512 12 x 32 (24 accumulators),
// AVX2 6 x 16 (12), generic 4 x 16.
// (no include guard: each kernels_*.cpp includes it once per vector type)

#ifndef FASTVAE_TILE_VEC
#error "define FASTVAE_TILE_VEC (the vector type) before including tile_kernels.h"
#endif

namespace tile {

using V = FASTVAE_TILE_VEC;
using T = V::scalar;
using reg = V::reg;

constexpr int W = V::W;
constexpr int NV = 2;                            // vectors per tile row
constexpr int NC = NV * W;                       // columns per tile
constexpr int kPanelWidth = 32;                  // columns per panel
constexpr int kGroups = kPanelWidth / NC;        // column groups per panel
constexpr int MR = W >= 16 ? 12 : (W >= 8 && sizeof(T) == 4 ? 6 : 4);  // rows per tile
constexpr int64_t kDepth = 384;                  // depth of one pass of the generic GEMM (256-512 measured alike; 384 best for K = 300-1280)
static_assert(kPanelWidth % NC == 0, "a panel must hold whole column groups");

FASTVAE_SIMD_INLINE int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }

// acc[MR][NV] += A[MR, kc] @ B[kc, NC]: A(r, k) at A[r * a_rs + k * a_cs], B(k, j) at B[k * b_ks + j].
// With PREFETCH each step asks for the B row kBPrefetch steps ahead into L1
// (one prefetch per cache line of it): the GEMM's kc x 32 slice of B (48 KB
// at kc = 384) does not stay in L1 between register tiles, and the hardware
// prefetcher left the loads waiting on L2 (Xeon, AVX-512: the micro-kernel at
// kc = 384 219-221 -> 229-235 GFLOP/s, the LSTM's per-step products M32 x K556
// x N1024 182 -> 206, M32 x K1024 x N256 202 -> 210-213). A prefetch past the
// slice's end only wastes a request.
constexpr int64_t kBPrefetch = 16;
constexpr int64_t kPrefetchDepth = 128;  // the GEMM prefetches B for slices of at least this depth
template <int R, int N = NV, bool PREFETCH = false>
FASTVAE_SIMD_INLINE void mm_tile(int64_t kc, const T* __restrict A, int64_t a_rs, int64_t a_cs,
                                 const T* __restrict B, int64_t b_ks, reg (&acc)[R][N]) {
  constexpr int kRowBytes = N * W * static_cast<int>(sizeof(T));
  for (int64_t k = 0; k < kc; ++k) {
    if constexpr (PREFETCH) {
      const char* ahead = reinterpret_cast<const char*>(B + (k + kBPrefetch) * b_ks);
#pragma GCC unroll 4
      for (int line = 0; line < kRowBytes; line += 64) __builtin_prefetch(ahead + line, 0, 3);
    }
    reg b[N];
#pragma GCC unroll 4
    for (int n = 0; n < N; ++n) b[n] = V::load(B + k * b_ks + n * W);
    const T* a = A + k * a_cs;
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      const reg av = V::set1(a[r * a_rs]);
#pragma GCC unroll 4
      for (int n = 0; n < N; ++n) acc[r][n] = V::fmadd(av, b[n], acc[r][n]);
    }
  }
}

template <int R, int N = NV>
FASTVAE_SIMD_INLINE void zero_tile(reg (&acc)[R][N]) {
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int n = 0; n < N; ++n) acc[r][n] = V::zero();
}

// C[R, cols] = acc (+ beta * C when ACCUMULATE); cols <= NC valid columns.
template <int R, bool ACCUMULATE, int N = NV>
FASTVAE_SIMD_INLINE void store_tile(const reg (&acc)[R][N], T* C, int64_t ldc, int64_t cols, T beta) {
  const reg bv = V::set1(beta);
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 4
    for (int n = 0; n < N; ++n) {
      T* c = C + r * ldc + n * W;
      const int64_t left = cols - n * W;
      if (left >= W) {
        V::store(c, ACCUMULATE ? V::fmadd(bv, V::load(c), acc[r][n]) : acc[r][n]);
      } else if (left > 0) {
        const int m = static_cast<int>(left);
        V::store_n(c, ACCUMULATE ? V::fmadd(bv, V::load_n(c, m), acc[r][n]) : acc[r][n], m);
      }
    }
  }
}

// A tile of R rows calls F<R> for R = MR, MR-1, ..., 1 (the row tail).
template <template <int> class F, typename... Args>
FASTVAE_SIMD_INLINE void for_rows(int64_t rows, Args&&... args) {
  if constexpr (MR >= 12) {
    switch (rows) {
      case 11: return F<11>::run(args...);
      case 10: return F<10>::run(args...);
      case 9: return F<9>::run(args...);
      case 8: return F<8>::run(args...);
      case 7: return F<7>::run(args...);
      case 6: return F<6>::run(args...);
      default: break;
    }
  }
  if constexpr (MR >= 6) {
    switch (rows) {
      case 5: return F<5>::run(args...);
      case 4: return F<4>::run(args...);
      default: break;
    }
  }
  switch (rows) {
    case 3: return F<3>::run(args...);
    case 2: return F<2>::run(args...);
    case 1: return F<1>::run(args...);
    default: return F<MR>::run(args...);
  }
}

// ------------------------------------------------------------------- GEMM --

// One tile of C = beta * C + A @ B over depth kc (PREFETCH: B's rows ahead, for deep slices).
template <int R, int N, bool PREFETCH>
FASTVAE_SIMD_INLINE void gemm_tile(int64_t kc, const T* A, int64_t a_rs, int64_t a_cs, const T* B, int64_t b_ks,
                                   T* C, int64_t ldc, int64_t cols, T beta) {
  reg acc[R][N];
  zero_tile<R, N>(acc);
  if (PREFETCH && kc >= kPrefetchDepth) {
    mm_tile<R, N, true>(kc, A, a_rs, a_cs, B, b_ks, acc);
  } else {  // a short slice stays in L1: the prefetches would only cost issue slots (AVX2 K = 32-64: -4%)
    mm_tile<R, N>(kc, A, a_rs, a_cs, B, b_ks, acc);
  }
  if (beta == T(0)) {
    store_tile<R, false, N>(acc, C, ldc, cols, beta);
  } else {
    store_tile<R, true, N>(acc, C, ldc, cols, beta);
  }
}

// The tiles of gemm() below, N vectors wide: A read in place (strides a_rs,
// a_cs), or from its copy in tiles ([kc][R]: strides 1 and R known at compile
// time, so one pointer steps through A and the broadcasts take fixed offsets).
// N = 1 serves a last column group of at most W columns: N = 300 on AVX-512
// leaves 12 of the last group's 32, and the full tile would do 32 columns of
// FMAs for them (the Sentence-VAE LSTM's input gradient dgates @ w_ih: 96-97
// -> 100-101 GFLOP/s). PREFETCH: see mm_tile (off where B's slice is reused
// from L1 by many tiles, as in head_hidden_grad: there it cost 1-8%).
template <int N, bool PREFETCH = true>
struct GemmTiles {
  template <int R>
  struct InPlace {
    static FASTVAE_SIMD_INLINE void run(int64_t kc, const T* A, int64_t a_rs, int64_t a_cs, const T* B, int64_t b_ks,
                                        T* C, int64_t ldc, int64_t cols, T beta) {
      gemm_tile<R, N, PREFETCH>(kc, A, a_rs, a_cs, B, b_ks, C, ldc, cols, beta);
    }
  };
  template <int R>
  struct Packed {
    static FASTVAE_SIMD_INLINE void run(int64_t kc, const T* A, const T* B, int64_t b_ks, T* C, int64_t ldc,
                                        int64_t cols, T beta) {
      gemm_tile<R, N, PREFETCH>(kc, A, 1, R, B, b_ks, C, ldc, cols, beta);
    }
  };
};

// Depth of the generic GEMM's passes. A right operand read in place from its
// rows (row stride ks > 32: the LSTM's gate gradients [P, 4H] below H = 128,
// rows_as_panels) puts the 64-byte slice each AVX2 column group reads of
// every row into a fraction of the L1 sets -- one set in 8 at 4H = 128
// (512-byte rows), one in 16 at 4H = 256 -- so a pass of kDepth rows can
// overflow their ways. The AVX2 tile takes such a B in passes of 64.
// Measured in place (Xeon, AVX2, the LSTM's fwd+bwd against nn.LSTM,
// alternating builds, with the 64-byte aligned scratch of blas.h): B64 T20
// E=H=32, 2 layers 1.45-1.50x -> 1.54-1.58x; E=H=96 1.10-1.13x ->
// 1.14-1.16x; E=H=64 and E=H=16 within the noise (1.18-1.24x, 1.89-2.00x
// either way). A stand-alone loop over the weight gradient alone (M32 x K1280
// x N128, aligned operands) gives 0.81-0.86 -> 0.84-0.88 of the FMA probe
// (32 and 96 measured worse than 64). The 12-row AVX-512 tile keeps kDepth:
// 64 measured no better there (0.73-0.75 against 0.75-0.76 of the probe at
// N128, worse at N256-384).
constexpr int64_t kInPlaceRowsDepth = 64;
FASTVAE_SIMD_INLINE int64_t pass_depth(int64_t b_ks) {
  return MR < 12 && b_ks > kPanelWidth ? kInPlaceRowsDepth : kDepth;
}

// A is copied into tiles when its rows or depth steps lie 2 KB or more apart
// (they would share L1 sets), and when it is a transposed operand (rows
// adjacent) whose depth steps lie 512 bytes or more apart: a tile's kc depth
// steps then touch kc cache lines, as many as its panel slice, and the two
// overflow L1 (AVX2, the LSTM's weight gradients [x | hprev]^T @ dgates at
// the Sentence-VAE size: 87-90 -> 98-105 GFLOP/s). Small row-major A (a
// recurrent state) is read in place. The 12-row AVX-512 tile also copies A
// when the copy is reused across many column groups (N >= 256): its 12 row
// pointers do not fit in registers next to its 24 accumulators, and GCC
// reloads them inside the k loop. Measured (GFLOP/s, packed vs in place):
// M32 K256 N1024 114 vs 109, M1280 K300 N1024 106 vs 99, but M64 K128 N32
// 74 vs 107 and M64 K32 N128 96 vs 104.
inline bool should_pack_a(int64_t a_rs, int64_t a_cs, int64_t N) {
  if (MR > 8 && N >= 256) return true;
  const int64_t far = 512 * 4 / static_cast<int64_t>(sizeof(T));
  if (a_rs == 1 && a_cs * static_cast<int64_t>(sizeof(T)) >= 512) return true;
  return a_rs >= far || a_cs >= far || (a_rs != 1 && a_cs != 1);
}

// Rows of the register tile that starts `left` rows before the end of a
// block: a tail shorter than a tile shares the last two tiles evenly (32
// rows on AVX2: 6+6+6+6+4+4, not 6+6+6+6+6+2 -- a 2-row tile has 4
// accumulator chains, too few to hide the FMA latency; the Sentence-VAE
// LSTM's per-step products 90 -> 95 GFLOP/s).
FASTVAE_SIMD_INLINE int64_t tile_rows_at(int64_t left) {
  if (left > MR && left < 2 * MR) return (left + 1) / 2;
  return imin(MR, left);
}

// Copies rows [0, M) x depth [k0, k0 + kc) of A into the register tiles'
// row groups (tile_rows_at), each group of `rows` rows as [kc][rows] at
// out + (its first row) * kc, so the micro-kernel reads A sequentially.
// A(r, k) at A[r * a_rs + k * a_cs]; or, with a_ps > 0, A in panels over its
// depth: A(r, k) at A[(k / 32) * a_ps + r * 32 + k % 32] (a_rs = 32, a_cs = 1).
inline void pack_a(int64_t M, int64_t k0, int64_t kc, const T* A, int64_t a_rs, int64_t a_cs, int64_t a_ps,
                   T* out) {
  for (int64_t i = 0, rows = 0; i < M; i += rows) {
    rows = tile_rows_at(M - i);
    T* tile = out + i * kc;
    for (int64_t k = 0; k < kc; ++k) {
      const int64_t kk = k0 + k;
      const T* src = a_ps > 0 ? A + i * a_rs + (kk / kPanelWidth) * a_ps + kk % kPanelWidth : A + i * a_rs + kk * a_cs;
      T* dst = tile + k * rows;
      for (int64_t r = 0; r < rows; ++r) dst[r] = src[r * a_rs];
    }
  }
}

#ifndef FASTVAE_ROW_BLOCK_BYTES
#define FASTVAE_ROW_BLOCK_BYTES (64 * 1024)
#endif

// Columns of P per block of the generic GEMM: a kc x nc block of the panels
// (512 KB) stays in L2 while every row block of A goes by.
#ifndef FASTVAE_COL_BLOCK_BYTES
#define FASTVAE_COL_BLOCK_BYTES (512 * 1024)
#endif
inline int64_t col_block(int64_t kc) {
  const int64_t cols = (FASTVAE_COL_BLOCK_BYTES / static_cast<int64_t>(sizeof(T))) / (kc > 0 ? kc : 1);
  return cols < kPanelWidth ? kPanelWidth : cols / kPanelWidth * kPanelWidth;
}

// Rows of A per block of the generic GEMM: a block of A (packed or not) stays
// in L2 (and its slice of a column group's tiles near L1) while the column
// groups of a column block go by.
inline int64_t row_block(int64_t kc) {
  const int64_t rows = (FASTVAE_ROW_BLOCK_BYTES / static_cast<int64_t>(sizeof(T))) / (kc > 0 ? kc : 1);
  return rows < MR ? MR : rows / MR * MR;
}

// C[M, N] = beta * C + A[M, K] @ P, P in panels (panel stride ps, K rows,
// row stride ks: 32 when packed, the row length of a row-major matrix read in
// place -- kernels.h).
// Loops: depth passes of pass_depth (A copied into tiles once per pass when it is
// packed) > column blocks of P (in L2) > row blocks of A > column groups (a
// kc x NC slice of P) > register tiles. The depth pass outermost lets a
// column block serve every row block of a tall A from L2; row blocks outermost
// (as before) streamed all of P from L3 once per row block: the LSTM's weight
// gradients [x | hprev]^T @ dgates at the Sentence-VAE size (M 300 and 256,
// K 1280, N 1024) 155 -> 175 GFLOP/s on a 2 MB-L2 Xeon (AVX-512), the other
// shapes alike. Row blocks end where a register tile does (tile_rows_at
// splits the tail of all M rows, as pack_a does).
//
// Panels of at most `resident` bytes (what fits in L2 next to the rest) take
// another order on the 12-row AVX-512 tile: row tiles outermost, each copied
// over the whole depth and run against every column group in one pass (C
// written once, A's copy in L1, P read from L2 throughout). Measured on a
// 2 MB-L2 Xeon, GFLOP/s: the LSTM's input gradient M1280 x K1024 x N300
// 183 -> 198 and input projection M1280 x K300 x N1024 203 -> 213; the
// weight gradients (5 MB of panels) would lose (194 -> 165); the AVX2 tile
// gains nothing (M1280 x K300 x N1024 115 -> 103), so it keeps the passes.
// scratch: gemm_scratch(M, K) values (used when A is packed; the tiles' row
// groups as tile_rows_at splits them).
inline bool whole_depth_rows(int64_t N, int64_t K, bool packed, int64_t resident) {
  const int64_t panels = (N + kPanelWidth - 1) / kPanelWidth;
  return MR >= 12 && packed && panels * K * kPanelWidth * static_cast<int64_t>(sizeof(T)) <= resident;
}

// One tile of `rows` rows of C (cols <= NC valid columns) from A's copy in tiles.
FASTVAE_SIMD_INLINE void packed_tile(int64_t rows, int64_t kc, const T* At, const T* B, int64_t b_ks, T* Ct,
                                     int64_t ldc, int64_t cols, T beta) {
  if (cols > W) {
    for_rows<GemmTiles<NV>::template Packed>(rows, kc, At, B, b_ks, Ct, ldc, cols, beta);
  } else {
    for_rows<GemmTiles<1>::template Packed>(rows, kc, At, B, b_ks, Ct, ldc, cols, beta);
  }
}

inline void gemm_whole_depth(int64_t M, int64_t N, int64_t K, const T* A, int64_t a_rs, int64_t a_cs, int64_t a_ps,
                             const T* P, int64_t ps, int64_t ks, T beta, T* C, int64_t ldc, T* scratch) {
  for (int64_t i = 0, rows = 0; i < M; i += rows) {
    rows = tile_rows_at(M - i);
    pack_a(rows, 0, K, A + i * a_rs, a_rs, a_cs, a_ps, scratch);
    for (int64_t c0 = 0; c0 < N; c0 += NC) {
      const T* B = P + (c0 / kPanelWidth) * ps + c0 % kPanelWidth;
      packed_tile(rows, K, scratch, B, ks, C + i * ldc + c0, ldc, imin(NC, N - c0), beta);
    }
  }
}

// The scratch gemm needs: A's copy for one pass, or one row tile's over the whole depth.
inline int64_t gemm_scratch(int64_t M, int64_t K) {
  const int64_t rows = (M + MR - 1) / MR * MR, pass = rows * imin(K, kDepth), tile = MR * K;
  return pass > tile ? pass : tile;
}

// A in panels (a_ps > 0, see pack_a) is always copied into tiles.
inline void gemm(int64_t M, int64_t N, int64_t K, const T* A, int64_t a_rs, int64_t a_cs, int64_t a_ps,
                 const T* P, int64_t ps, int64_t ks, T beta, T* C, int64_t ldc, T* scratch, int64_t resident) {
  const bool packed = a_ps > 0 || should_pack_a(a_rs, a_cs, N);
  if (whole_depth_rows(N, K, packed, resident)) {
    gemm_whole_depth(M, N, K, A, a_rs, a_cs, a_ps, P, ps, ks, beta, C, ldc, scratch);
    return;
  }
  const int64_t depth = pass_depth(ks);
  const int64_t mc = row_block(imin(depth, K));
  for (int64_t k0 = 0; k0 < K; k0 += depth) {
    const int64_t kc = imin(depth, K - k0);
    const T pass_beta = k0 == 0 ? beta : T(1);
    if (packed) pack_a(M, k0, kc, A, a_rs, a_cs, a_ps, scratch);
    const int64_t nc = col_block(kc);
    for (int64_t n0 = 0; n0 < N; n0 += nc) {
      const int64_t n1 = imin(N, n0 + nc);
      for (int64_t m0 = 0, m1 = 0; m0 < M; m0 = m1) {
        while (m1 < M && m1 - m0 < mc) m1 += tile_rows_at(M - m1);  // whole tiles: a block ends where one does
        for (int64_t c0 = n0; c0 < n1; c0 += NC) {
          const T* B = P + (c0 / kPanelWidth) * ps + k0 * ks + c0 % kPanelWidth;
          const int64_t cols = imin(NC, N - c0);
          for (int64_t i = m0, rows = 0; i < m1; i += rows) {
            rows = tile_rows_at(M - i);
            T* Ct = C + i * ldc + c0;
            const T* Ai = A + i * a_rs + k0 * a_cs;
            if (packed) {
              packed_tile(rows, kc, scratch + i * kc, B, ks, Ct, ldc, cols, pass_beta);
            } else if (cols > W) {
              for_rows<GemmTiles<NV>::template InPlace>(rows, kc, Ai, a_rs, a_cs, B, ks, Ct, ldc, cols, pass_beta);
            } else {
              for_rows<GemmTiles<1>::template InPlace>(rows, kc, Ai, a_rs, a_cs, B, ks, Ct, ldc, cols, pass_beta);
            }
          }
        }
      }
    }
  }
}

// --------------------------------------------------------------- transpose --

// dst[j * ldd + i] = src[i * lds + j] for i < rows, j < cols: blocks of 64 x 64
// (16 KB each way in float, in L1), 8 x 8 register transposes inside them.
// Packs a transposed right operand into panels and turns the LSTM's
// transposed weight gradients around (the generic strided copy was 4-5x slower).
inline void transpose(int64_t rows, int64_t cols, const T* src, int64_t lds, T* dst, int64_t ldd) {
  constexpr int64_t kb = 64;
  for (int64_t i0 = 0; i0 < rows; i0 += kb) {
    const int64_t i1 = imin(rows, i0 + kb);
    for (int64_t j0 = 0; j0 < cols; j0 += kb) {
      const int64_t j1 = imin(cols, j0 + kb);
      int64_t i = i0;
      for (; i + 8 <= i1; i += 8) {
        int64_t j = j0;
        for (; j + 8 <= j1; j += 8) V::transpose8x8(src + i * lds + j, lds, dst + j * ldd + i, ldd);
        for (; j < j1; ++j)
          for (int64_t r = 0; r < 8; ++r) dst[j * ldd + i + r] = src[(i + r) * lds + j];
      }
      for (; i < i1; ++i)
        for (int64_t j = j0; j < j1; ++j) dst[j * ldd + i] = src[i * lds + j];
    }
  }
}

// ------------------------------------------------------- vocabulary heads --
//
// The heads multiply a block of `rows` vocabulary rows, W [rows, H] (row
// stride ldw, read in place), by the hidden states of a chunk of tokens given
// transposed in panels, hT [H, C] (panel p at hT + p * H * 32). Their results
// are token panels: a [rows, C] matrix stored as C / 32 panels of [rows][32]
// (panel p at buf + p * ps), so per-token statistics are plain vector loops.

// Part `part` of `parts` of the cache lines of [p, p + n) asked into L2 (a
// kernel spreads the prefetch of its next call's operand over its passes).
// Past the end of an array a prefetch only wastes a request: it never faults.
// With for_write the lines come in to be written (dW's next rows).
FASTVAE_SIMD_INLINE void prefetch_part(const T* p, int64_t n, int64_t part, int64_t parts, bool for_write = false) {
  const int64_t lines = (n * static_cast<int64_t>(sizeof(T)) + 63) / 64;
  const char* c = reinterpret_cast<const char*>(p);
  const int64_t end = lines * (part + 1) / parts;
  if (for_write) {
    for (int64_t l = lines * part / parts; l < end; ++l) __builtin_prefetch(c + l * 64, 1, 2);
  } else {
    for (int64_t l = lines * part / parts; l < end; ++l) __builtin_prefetch(c + l * 64, 0, 2);
  }
}

// out[rows, 32-group] = W @ hT (+ bias per row); bmax[32-group] = max(bmax, column maxima).
template <int R>
struct LogitsTile {
  static FASTVAE_SIMD_INLINE void run(int64_t H, const T* Wr, int64_t ldw, const T* B, const T* bias, T* out,
                                      T* bmax) {
    reg acc[R][NV];
    zero_tile<R>(acc);
    mm_tile<R>(H, Wr, ldw, 1, B, kPanelWidth, acc);
    reg mx[NV];
#pragma GCC unroll 4
    for (int n = 0; n < NV; ++n) mx[n] = V::load(bmax + n * W);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      const reg b = V::set1(bias != nullptr ? bias[r] : T(0));
#pragma GCC unroll 4
      for (int n = 0; n < NV; ++n) {
        const reg x = V::add(acc[r][n], b);
        V::store(out + r * kPanelWidth + n * W, x);
        mx[n] = V::max(x, mx[n]);
      }
    }
#pragma GCC unroll 4
    for (int n = 0; n < NV; ++n) V::store(bmax + n * W, mx[n]);
  }
};

// Logits of `rows` words for the npanels * 32 tokens of hT, with the bias, into
// the token panels out (stride ps); bmax [npanels * 32] (may be null) takes
// the running maximum per token.
inline void head_logits(int64_t rows, int64_t H, const T* Wb, int64_t ldw, const T* bias, const T* hT,
                        int64_t npanels, T* out, int64_t ps, T* bmax) {
  T scratch_max[NC] = {};  // the maxima when the caller wants none
  // The callers go through W a block of rows after another: the next block
  // (rows * ldw values past this one) is asked into L2 over this call's passes.
  // W streams from memory (10 MB at V = 10k, H = 256) and its rows are read in
  // place by 6 or 12 broadcasts per step, which the hardware prefetcher does
  // not run ahead of: the AVX2 logits ran at 85 GFLOP/s on W streamed, 106 on
  // a block already in cache (H = 256, 256 tokens).
  const int64_t passes = npanels * kGroups;
  for (int64_t p = 0; p < npanels; ++p) {
    for (int g = 0; g < kGroups; ++g) {
      prefetch_part(Wb + rows * ldw, rows * ldw, p * kGroups + g, passes);
      const T* B = hT + p * H * kPanelWidth + g * NC;
      T* mx = bmax != nullptr ? bmax + p * kPanelWidth + g * NC : scratch_max;
      for (int64_t i = 0; i < rows; i += MR) {
        for_rows<LogitsTile>(imin(MR, rows - i), H, Wb + i * ldw, ldw, B, bias != nullptr ? bias + i : nullptr,
                             out + p * ps + i * kPanelWidth + g * NC, mx);
      }
    }
  }
}

// Running argmax per token: best/best_index [32-group] take the largest
// W @ hT + bias over this tile's rows (strictly larger: ties keep the first).
template <int R>
struct ArgmaxTile {
  static FASTVAE_SIMD_INLINE void run(int64_t H, const T* Wr, int64_t ldw, const T* B, const T* bias, T first,
                                      T* best, T* best_index) {
    reg acc[R][NV];
    zero_tile<R>(acc);
    mm_tile<R>(H, Wr, ldw, 1, B, kPanelWidth, acc);
    reg bv[NV], bi[NV];
#pragma GCC unroll 4
    for (int n = 0; n < NV; ++n) bv[n] = V::load(best + n * W);
    if (bias != nullptr) {
#pragma GCC unroll 16
      for (int r = 0; r < R; ++r) {
        const reg b = V::set1(bias[r]);
#pragma GCC unroll 4
        for (int n = 0; n < NV; ++n) acc[r][n] = V::add(acc[r][n], b);
      }
    }
    // Past the first blocks a tile rarely holds a new best: its column maxima
    // against the best so far decide whether the per-row selects run (skipped
    // only where they would change nothing). A NaN that reaches the maxima
    // takes the full path, which never picks a NaN. R640 H32 V10k, a scratch
    // loop over the blocks as linear_argmax runs them: AVX2 4.45-4.54 ->
    // 3.77-3.86 ms, AVX-512 2.74-2.89 -> 2.58-2.61 ms; H256 AVX2 -3%, AVX-512 alike.
    bool improves = false;
#pragma GCC unroll 4
    for (int n = 0; n < NV; ++n) {
      reg m = acc[0][n];
#pragma GCC unroll 16
      for (int r = 1; r < R; ++r) m = V::max(acc[r][n], m);
      improves = improves || V::any(V::gt_or_nan(m, bv[n]));
    }
    if (!improves) return;
#pragma GCC unroll 4
    for (int n = 0; n < NV; ++n) bi[n] = V::load(best_index + n * W);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      const reg index = V::set1(first + T(r));
#pragma GCC unroll 4
      for (int n = 0; n < NV; ++n) {
        const reg x = acc[r][n];
        const auto better = V::gt(x, bv[n]);
        bv[n] = V::select(better, x, bv[n]);
        bi[n] = V::select(better, index, bi[n]);
      }
    }
#pragma GCC unroll 4
    for (int n = 0; n < NV; ++n) {
      V::store(best + n * W, bv[n]);
      V::store(best_index + n * W, bi[n]);
    }
  }
};

// best/best_index [npanels * 32] updated with rows [0, rows) of W, whose first
// row is word `first` (indices are held as T: exact below 2^24 in float).
inline void head_argmax(int64_t rows, int64_t H, const T* Wb, int64_t ldw, const T* bias, const T* hT,
                        int64_t npanels, T first, T* best, T* best_index) {
  for (int64_t p = 0; p < npanels; ++p) {
    for (int g = 0; g < kGroups; ++g) {
      prefetch_part(Wb + rows * ldw, rows * ldw, p * kGroups + g, npanels * kGroups);  // the next block of W (as head_logits)
      const T* B = hT + p * H * kPanelWidth + g * NC;
      const int64_t c = p * kPanelWidth + g * NC;
      for (int64_t i = 0; i < rows; i += MR) {
        for_rows<ArgmaxTile>(imin(MR, rows - i), H, Wb + i * ldw, ldw, B, bias != nullptr ? bias + i : nullptr,
                             first + T(i), best + c, best_index + c);
      }
    }
  }
}

// buf = exp(buf - mref) per token column; sum [tokens] += the column sums.
inline void head_exp(int64_t rows, T* buf, int64_t npanels, int64_t ps, const T* mref, T* sum) {
  constexpr int kv = kPanelWidth / W;
  for (int64_t p = 0; p < npanels; ++p) {
    reg m[kv], s[kv];
#pragma GCC unroll 4
    for (int j = 0; j < kv; ++j) {
      m[j] = V::load(mref + p * kPanelWidth + j * W);
      s[j] = V::zero();
    }
    T* panel = buf + p * ps;
    for (int64_t v = 0; v < rows; ++v) {
#pragma GCC unroll 4
      for (int j = 0; j < kv; ++j) {
        T* x = panel + v * kPanelWidth + j * W;
        const reg e = V::exp(V::sub(V::load(x), m[j]));
        V::store(x, e);
        s[j] = V::add(s[j], e);
      }
    }
#pragma GCC unroll 4
    for (int j = 0; j < kv; ++j) {
      T* out = sum + p * kPanelWidth + j * W;
      V::store(out, V::add(V::load(out), s[j]));
    }
  }
}

// buf *= factor per token column (factor [tokens]); db [rows] += the row sums (db may be null).
inline void head_scale(int64_t rows, T* buf, int64_t npanels, int64_t ps, const T* factor, T* db) {
  constexpr int kv = kPanelWidth / W;
  for (int64_t v = 0; v < rows; ++v) {
    reg acc = V::zero();
    for (int64_t p = 0; p < npanels; ++p) {
      T* x = buf + p * ps + v * kPanelWidth;
#pragma GCC unroll 4
      for (int j = 0; j < kv; ++j) {
        const reg d = V::mul(V::load(x + j * W), V::load(factor + p * kPanelWidth + j * W));
        V::store(x + j * W, d);
        acc = V::add(acc, d);
      }
    }
    if (db != nullptr) db[v] += V::reduce_add(acc);
  }
}

// buf = exp(buf - lse) * g per token column (lse, g [tokens]); db [rows] += the row sums.
inline void head_softmax_grad(int64_t rows, T* buf, int64_t npanels, int64_t ps, const T* lse, const T* g, T* db) {
  constexpr int kv = kPanelWidth / W;
  for (int64_t v = 0; v < rows; ++v) {
    reg acc = V::zero();
    for (int64_t p = 0; p < npanels; ++p) {
      T* x = buf + p * ps + v * kPanelWidth;
#pragma GCC unroll 4
      for (int j = 0; j < kv; ++j) {
        const int64_t c = p * kPanelWidth + j * W;
        const reg d = V::mul(V::exp(V::sub(V::load(x + j * W), V::load(lse + c))), V::load(g + c));
        V::store(x + j * W, d);
        acc = V::add(acc, d);
      }
    }
    if (db != nullptr) db[v] += V::reduce_add(acc);
  }
}

// dW tile [R, 32-group] = beta * dW + dl[R rows, all tokens] @ h (h in panels over H).
template <int R>
struct WeightGradTile {
  static FASTVAE_SIMD_INLINE void run(int64_t npanels, const T* dl, int64_t ps, const T* B, T* dw, int64_t ldw,
                                      int64_t cols, T beta) {
    reg acc[R][NV];
    zero_tile<R>(acc);
    for (int64_t p = 0; p < npanels; ++p)
      mm_tile<R>(kPanelWidth, dl + p * ps, kPanelWidth, 1, B + p * kPanelWidth * kPanelWidth, kPanelWidth, acc);
    if (beta == T(0)) {
      store_tile<R, false>(acc, dw, ldw, cols, beta);
    } else {
      store_tile<R, true>(acc, dw, ldw, cols, beta);
    }
  }
};

// dW [rows, H] (row stride ldw) = beta * dW + dl @ h, with dl the token panels
// of these rows and h [tokens, H] in panels over H (panel stride hps, at
// least npanels * 32 rows each: zero past the last token).
inline void head_weight_grad(int64_t rows, int64_t H, const T* dl, int64_t npanels, int64_t ps, const T* hP,
                             int64_t hps, T beta, T* dw, int64_t ldw) {
  const int64_t passes = (H + NC - 1) / NC;
  for (int64_t c0 = 0; c0 < H; c0 += NC) {
    prefetch_part(dw + rows * ldw, rows * ldw, c0 / NC, passes, true);  // the next block's rows of dW (as head_logits)
    const T* B = hP + (c0 / kPanelWidth) * hps + c0 % kPanelWidth;
    const int64_t cols = imin(NC, H - c0);
    for (int64_t i = 0; i < rows; i += MR) {
      for_rows<WeightGradTile>(imin(MR, rows - i), npanels, dl + i * kPanelWidth, ps, B, dw + i * ldw + c0, ldw,
                               cols, beta);
    }
  }
}

// dhT [H, tokens] (row stride ldh) = beta * dhT + W^T @ dl over this block's rows.
// The H rows are split into tiles of near-equal height (H = 32 on AVX2: 6, 6,
// 5, 5, 5, 5 rather than 6 x 5 + 2): a 2-row tile has too few accumulators to
// hide the FMA latency.
inline void head_hidden_grad(int64_t rows, int64_t H, const T* Wb, int64_t ldw, const T* dl, int64_t npanels,
                             int64_t ps, T beta, T* dhT, int64_t ldh) {
  const int64_t tiles = (H + MR - 1) / MR;
  // Depth passes of 128 words: the W rows and dl slice of a pass stay in L1
  // while all of the column group's tiles go over them (AVX2 at H = 32, the
  // whole linear CE: 31.2-31.8 -> 29.9-30.6 ms; AVX-512 alike).
  constexpr int64_t kch = 128;
  for (int64_t p = 0; p < npanels; ++p) {
    for (int g = 0; g < kGroups; ++g) {
      prefetch_part(Wb + rows * ldw, rows * ldw, p * kGroups + g, npanels * kGroups);  // the next block of W (as head_logits)
      const int64_t c0 = p * kPanelWidth + g * NC;
      for (int64_t k0 = 0; k0 < rows; k0 += kch) {
        const int64_t kc = imin(kch, rows - k0);
        const T pass_beta = k0 == 0 ? beta : T(1);
        for (int64_t t = 0, i = 0; t < tiles; ++t) {
          const int64_t height = (H - i) / (tiles - t) + ((H - i) % (tiles - t) != 0);
          for_rows<GemmTiles<NV, false>::template InPlace>(height, kc, Wb + k0 * ldw + i, int64_t(1), ldw,
                                                           dl + p * ps + k0 * kPanelWidth + g * NC,
                                                           int64_t(kPanelWidth), dhT + i * ldh + c0, ldh,
                                                           int64_t(NC), pass_beta);
          i += height;
        }
      }
    }
  }
}


// ------------------------------------------------------------ FMA probe --

// n steps of 12 independent vector FMAs on registers (no memory traffic):
// the FMA peak of this ISA level on one core. Returns the flops done.
inline int64_t fma_loop(int64_t n) {
  reg acc[12];
#pragma GCC unroll 12
  for (int i = 0; i < 12; ++i) acc[i] = V::set1(T(i) * T(1e-3));
  const reg a = V::set1(T(0.999999)), b = V::set1(T(1e-7));
  for (int64_t k = 0; k < n; ++k) {
#pragma GCC unroll 12
    for (int i = 0; i < 12; ++i) acc[i] = V::fmadd(acc[i], a, b);
  }
  T sum = 0;
  for (int i = 0; i < 12; ++i) sum += V::reduce_add(acc[i]);
  volatile T sink = sum;  // keeps the loop
  (void)sink;
  return 2 * 12 * W * n;
}

// ------------------------------------------------------ LSTM cell rows --
//
// One row (one sequence, H hidden units) of an LSTM step; gate blocks in
// nn.LSTM's order i, f, g, o. sigmoid(x) = 1 / (1 + e^-x); tanh as V::tanh.
// Vectors of W units, the last one partial when W does not divide H.

FASTVAE_SIMD_INLINE reg sigmoid(reg x) {
  return V::recip(V::add(V::set1(T(1)), V::exp(V::sub(V::zero(), x))));
}

template <typename Fn>
FASTVAE_SIMD_INLINE void over_units(int64_t H, Fn fn) {
  int64_t j = 0;
  for (; j + W <= H; j += W) fn(j, W);
  if (j < H) fn(j, static_cast<int>(H - j));
}

FASTVAE_SIMD_INLINE reg ld(const T* p, int n) { return n == W ? V::load(p) : V::load_n(p, n); }
FASTVAE_SIMD_INLINE void st(T* p, reg x, int n) {
  if (n == W) {
    V::store(p, x);
  } else {
    V::store_n(p, x, n);
  }
}

// U vectors of units at j, j + W, ... (the last one n lanes wide): their
// dependency chains (two exponentials and reciprocals deep) interleave.
template <int U>
FASTVAE_SIMD_INLINE void lstm_fwd_units(int64_t j, int n, const T* pre, const T* rec, const T* bias, T* act,
                                        const T* c_in, T* c_out, const T* h_in, T* h_out, T* y, T* cprev,
                                        T* tanh_c, T* hprev, int64_t H) {
  reg g[4][U];
#pragma GCC unroll 4
  for (int q = 0; q < 4; ++q) {
#pragma GCC unroll 4
    for (int u = 0; u < U; ++u) {
      const int64_t k = q * H + j + u * W;
      const int m = u == U - 1 ? n : W;
      reg x = ld(pre + k, m);
      if (rec != nullptr) x = V::add(x, ld(rec + k, m));
      if (bias != nullptr) x = V::add(x, ld(bias + k, m));
      g[q][u] = q == 2 ? V::tanh(x) : sigmoid(x);
      if (act != nullptr) st(act + k, g[q][u], m);
    }
  }
#pragma GCC unroll 4
  for (int u = 0; u < U; ++u) {
    const int64_t k = j + u * W;
    const int m = u == U - 1 ? n : W;
    const reg c_old = ld(c_in + k, m);
    if (cprev != nullptr) {
      st(cprev + k, c_old, m);
      st(hprev + k, ld(h_in + k, m), m);
    }
    const reg c_new = V::fmadd(g[1][u], c_old, V::mul(g[0][u], g[2][u]));
    const reg tc = V::tanh(c_new);
    const reg h_new = V::mul(g[3][u], tc);
    st(c_out + k, c_new, m);
    st(h_out + k, h_new, m);
    if (y != nullptr) st(y + k, h_new, m);
    if (tanh_c != nullptr) st(tanh_c + k, tc, m);
  }
}

// Forward of one row. pre [4H]: the input projection (+ rec [4H], the
// recurrent product h_{t-1} @ w_hh^T, when not null; + bias [4H] when not
// null). act [4H] (or null) receives the activations i, f, g, o (may alias
// pre). The cell c_in [H] becomes c_out (may alias), the hidden state h_out;
// y (or null) gets a copy of it. Saving (cprev non-null): cprev = c_in,
// hprev = h_in (read before h_out is written: they may alias), tanh_c = tanh
// of the new cell. A decoding step is the same row without rec or saving.
inline void lstm_fwd_row(const T* pre, const T* rec, const T* bias, T* act, const T* c_in, T* c_out,
                         const T* h_in, T* h_out, T* y, T* cprev, T* tanh_c, T* hprev, int64_t H) {
  int64_t j = 0;
  for (; j + 2 * W <= H; j += 2 * W)
    lstm_fwd_units<2>(j, W, pre, rec, bias, act, c_in, c_out, h_in, h_out, y, cprev, tanh_c, hprev, H);
  for (; j < H; j += W)
    lstm_fwd_units<1>(j, static_cast<int>(imin(W, H - j)), pre, rec, bias, act, c_in, c_out, h_in, h_out, y,
                      cprev, tanh_c, hprev, H);
}

// Backward of one row: reads the saved activations gates [4H], cprev,
// tanh_c [H], the output gradient gy [H] and the carried dh [H]; writes the
// pre-activation gradients dgate [4H] and the new carried dc [H] (in place);
// db [4H] (or null) accumulates dgate (the bias gradient, without a second
// pass over all T * B rows of dgate). With dgate_ps > 0 dgate is this row of
// a matrix in panels (column c at dgate[(c / 32) * dgate_ps + c % 32]; H a
// multiple of 16, so no vector of units straddles two panels).
inline void lstm_bwd_row(const T* gates, const T* cprev, const T* tanh_c, const T* gy, const T* dh, T* dc, T* dgate,
                         int64_t dgate_ps, T* db, int64_t H) {
  const reg one = V::set1(T(1));
  over_units(H, [&](int64_t j, int n) {
    const reg i = ld(gates + j, n), f = ld(gates + H + j, n), g = ld(gates + 2 * H + j, n),
              o = ld(gates + 3 * H + j, n), tc = ld(tanh_c + j, n);
    const reg dht = V::add(ld(gy + j, n), ld(dh + j, n));
    const reg dct = V::fmadd(V::mul(dht, o), V::sub(one, V::mul(tc, tc)), ld(dc + j, n));
    const reg d[4] = {V::mul(V::mul(dct, g), V::mul(i, V::sub(one, i))),
                      V::mul(V::mul(dct, ld(cprev + j, n)), V::mul(f, V::sub(one, f))),
                      V::mul(V::mul(dct, i), V::sub(one, V::mul(g, g))),
                      V::mul(V::mul(dht, tc), V::mul(o, V::sub(one, o)))};
#pragma GCC unroll 4
    for (int q = 0; q < 4; ++q) {
      const int64_t col = q * H + j;
      st(dgate_ps > 0 ? dgate + (col / kPanelWidth) * dgate_ps + col % kPanelWidth : dgate + col, d[q], n);
      if (db != nullptr) st(db + q * H + j, V::add(ld(db + q * H + j, n), d[q]), n);
    }
    st(dc + j, V::mul(dct, f), n);
  });
}

}  // namespace tile
