// The tile kernels of the CPU ops (csrc/cpu/tile_kernels.h), one set per ISA
// level, picked at run time by cpu_isa() (FASTVAE_CPU_ISA overrides).
//
// Operand layouts are those of tile_kernels.h: "panels" of 32 columns (a K x N
// matrix as ceil(N / 32) blocks of K rows of 32 values, panel stride ps) and
// token panels of the vocabulary heads.
#pragma once

#include <cstdint>

namespace fastvae {
namespace cpu {

constexpr int64_t kPanelWidth = 32;

template <typename T>
struct KernelSet {
  const char* isa;
  int64_t tile_rows;   // rows of C per register tile
  // Values of scratch gemm needs for M rows of depth K (A's copy in tiles).
  int64_t (*gemm_scratch)(int64_t M, int64_t K);

  // C[M, N] = beta * C + A[M, K] @ P. A(r, k) at A[r * a_rs + k * a_cs], or
  // with a_ps > 0 A in panels over its depth: a_rs = 32, a_cs = 1 and A(r, k)
  // at A[(k / 32) * a_ps + r * 32 + k % 32]; P in panels (stride ps, K rows
  // each, row k of a panel ks values after row k - 1: 32 when packed, or
  // ps = 32 and ks = N for a row-major [K, N] matrix read in place, N a
  // multiple of 32). scratch: gemm_scratch(M, K) values, used when A is copied
  // into tiles.
  // resident: the bytes of panels that stay in L2 through the product (the
  // loop order depends on it).
  void (*gemm)(int64_t M, int64_t N, int64_t K, const T* A, int64_t a_rs, int64_t a_cs, int64_t a_ps, const T* P,
               int64_t ps, int64_t ks, T beta, T* C, int64_t ldc, T* scratch, int64_t resident);

  // Vocabulary heads over `rows` words (W [rows, H], row stride ldw) and the
  // npanels * 32 tokens of hT ([H, tokens] in panels of stride H * 32):
  // out (token panels, stride ps) = W @ hT + bias; bmax [tokens] (or null) = running max.
  void (*head_logits)(int64_t rows, int64_t H, const T* W, int64_t ldw, const T* bias, const T* hT,
                      int64_t npanels, T* out, int64_t ps, T* bmax);
  // best / best_index [tokens] = running (max, argmax) of W @ hT + bias; `first` is W's first word.
  void (*head_argmax)(int64_t rows, int64_t H, const T* W, int64_t ldw, const T* bias, const T* hT,
                      int64_t npanels, T first, T* best, T* best_index);
  // buf = exp(buf - mref[token]); sum[token] += column sums.
  void (*head_exp)(int64_t rows, T* buf, int64_t npanels, int64_t ps, const T* mref, T* sum);
  // buf *= factor[token]; db[row] += row sums (db may be null).
  void (*head_scale)(int64_t rows, T* buf, int64_t npanels, int64_t ps, const T* factor, T* db);
  // buf = exp(buf - lse[token]) * g[token]; db[row] += row sums (db may be null).
  void (*head_softmax_grad)(int64_t rows, T* buf, int64_t npanels, int64_t ps, const T* lse, const T* g, T* db);
  // dW [rows, H] (row stride ldw) = beta * dW + dl @ h; h [tokens, H] in panels over H
  // (stride hps, npanels * 32 rows: zero past the last token).
  void (*head_weight_grad)(int64_t rows, int64_t H, const T* dl, int64_t npanels, int64_t ps, const T* hP,
                           int64_t hps, T beta, T* dW, int64_t ldw);
  // dhT [H, tokens] (row stride ldh) = beta * dhT + W^T @ dl.
  void (*head_hidden_grad)(int64_t rows, int64_t H, const T* W, int64_t ldw, const T* dl, int64_t npanels,
                           int64_t ps, T beta, T* dhT, int64_t ldh);
  // LSTM rows (tile_kernels.h): one sequence's step, forward (also the decoding step) and backward.
  void (*lstm_fwd_row)(const T* pre, const T* rec, const T* bias, T* act, const T* c_in, T* c_out, const T* h_in,
                       T* h_out, T* y, T* cprev, T* tanh_c, T* hprev, int64_t H);
  // dgate_ps > 0: dgate is a row of a matrix in panels of that stride (H a multiple of 16).
  void (*lstm_bwd_row)(const T* gates, const T* cprev, const T* tanh_c, const T* gy, const T* dh, T* dc, T* dgate,
                       int64_t dgate_ps, T* db, int64_t H);
  // dst[j * ldd + i] = src[i * lds + j] for i < rows, j < cols.
  void (*transpose)(int64_t rows, int64_t cols, const T* src, int64_t lds, T* dst, int64_t ldd);
  // n steps of 12 independent vector FMAs in registers; returns the flops done (the FMA peak probe).
  int64_t (*fma_loop)(int64_t n);
};

// The set for this CPU (float: the cpu_isa() level; double: the generic set).
template <typename T>
const KernelSet<T>& kernels();

// The per-level sets (null where the level is not compiled in).
const KernelSet<float>* kernels_avx512();
const KernelSet<float>* kernels_avx2();
const KernelSet<float>& kernels_generic_float();
const KernelSet<double>& kernels_generic_double();

}  // namespace cpu
}  // namespace fastvae

// The body of a kernels_<level>.cpp: the KernelSet of namespace NS::tile.
#define FASTVAE_KERNEL_SET(NS, NAME)                                                                          \
  {                                                                                                           \
    NAME, NS::tile::MR, &NS::tile::gemm_scratch, &NS::tile::gemm, &NS::tile::head_logits, &NS::tile::head_argmax,    \
        &NS::tile::head_exp, &NS::tile::head_scale, &NS::tile::head_softmax_grad, &NS::tile::head_weight_grad, \
        &NS::tile::head_hidden_grad, &NS::tile::lstm_fwd_row, &NS::tile::lstm_bwd_row, &NS::tile::transpose,   \
        &NS::tile::fma_loop                                                                                   \
  }
