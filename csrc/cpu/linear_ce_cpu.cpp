// CPU kernels of the fused linear + cross-entropy (schemas: csrc/linear_ce_ops.cpp).
//
//   hidden [N, H], weight [V, H], bias [V] or none, target [N] int64
//   loss_n = logsumexp(l_n) - l_n[target_n],  l_n = weight @ hidden_n + bias
//
// The [N, V] logits are never formed. Rows of hidden go in chunks of C rows
// (a chunk is one column block of the logits); a chunk's logits are held
// transposed, l^T [V, C] with row stride C, and are computed and consumed in
// vocabulary blocks of VB rows of weight:
//
//   l^T[block] = weight[block] @ h_c^T          (weight read in place, the small
//                                               h_c^T packed once per chunk)
//   d_weight[block] += dl^T[block] @ h_c        (h_c packed once per chunk)
//   d_hidden[chunk] += dl^T[block]^T @ weight[block]
//
// so every GEMM works on a cache-sized block and the per-row softmax runs
// down the columns of l^T: its loops are contiguous over the C rows of the
// chunk and vectorize without horizontal reductions.
//
// Forward with gradients ("mean"/"sum"): each block's logits get the bias,
// the running max m and the running sum s of exp(l - m) (online log-sum-exp:
// when m grows, s is rescaled), and are overwritten with exp(l - m_block),
// m_block the running max after that block. After the last block,
// lse = m + log s, and the whole l^T [V, C] buffer turns into
//   dl = (softmax - onehot(target)) * scale,  softmax = exp(l - m_block) * exp(m_block - m) / s
// (scale = 1/n_valid for "mean", 1 for "sum", 0 at ignored rows), block by
// block, each block followed by its two gradient GEMMs. The backward then
// only multiplies these gradients by the upstream scalar.
//
// Forward without gradients: the same online statistics on one [VB, C] block
// buffer. Backward by recomputation (reduction "none", whose upstream
// gradient differs per row): per block, l^T again, dl = (exp(l - lse) -
// onehot) * grad_loss[row], the two GEMMs; again one [VB, C] buffer.
//
// Threads: at::parallel_for over chunks would race on d_weight, so the
// parallelism is inside: the GEMMs split their rows, the softmax loops split
// columns (statistics) or vocabulary rows (gradients).
//
// Non-finite inputs are not checked: a NaN in hidden makes that row's loss
// and gradients NaN (and "mean"/"sum" NaN).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "../checks.h"
#include "blas.h"
#include "vec_math.h"

namespace fastvae {
namespace cpu {
namespace {

enum class Reduction { None, Mean, Sum };

Reduction parse_reduction(c10::string_view r) {
  if (r == "none") return Reduction::None;
  if (r == "mean") return Reduction::Mean;
  if (r == "sum") return Reduction::Sum;
  TORCH_CHECK_VALUE(false, "fastvae.linear_cross_entropy: argument 'reduction' must be 'none', 'mean' or 'sum', got '",
                    std::string(r), "'");
}

// Chunk and block sizes, tuned fp32 single-thread at N=1280, H=256, V=10k
// (forward+backward): C=128 -> 256 rows per chunk was ~10 % faster, 320-512
// within noise of 256; blocks of 256-1024 rows of weight within noise of each
// other, one block of all 10k rows ~50 % slower (the GEMM operands leave L2).
// The [V, C] buffer of the forward with gradients is capped at
// kMaxChunkElems; larger vocabularies get fewer rows per chunk.
constexpr int64_t kChunkRows = 256;
constexpr int64_t kMinChunkRows = 32;
constexpr int64_t kMaxChunkElems = int64_t(1) << 22;  // 16 MB in fp32
constexpr int64_t kVocabBlock = 512;
constexpr int64_t kParallelElems = 32768;  // elements per task of the softmax loops

int64_t chunk_rows(int64_t N, int64_t V) {
  int64_t c = kChunkRows;
  while (c > kMinChunkRows && c * V > kMaxChunkElems) c /= 2;
  return std::max<int64_t>(1, std::min(c, N));
}

FASTVAE_INLINE float exp_of(float x) { return exp_approx(x); }
FASTVAE_INLINE double exp_of(double x) { return std::exp(x); }

// ------------------------------------------------------------ softmax loops --

// Statistics of one vocabulary block, columns [c0, c1) of lt [rows, ld]:
// adds the bias, records the target logit of every column whose target lies in
// this block, raises the running max mx (rescaling the running sum sm), and
// overwrites the block with exp(l - mx). block_max receives the new mx.
template <typename scalar_t>
FASTVAE_INLINE void block_stats_body(scalar_t* lt, int64_t rows, int64_t ld, int64_t c0, int64_t c1,
                                     const scalar_t* bias, int64_t v0, const int64_t* target,
                                     int64_t ignore_index, scalar_t* mx, scalar_t* sm,
                                     scalar_t* block_max, scalar_t* target_logit) {
  scalar_t* __restrict bm = block_max;
  for (int64_t c = c0; c < c1; ++c) bm[c] = mx[c];
  for (int64_t v = 0; v < rows; ++v) {
    scalar_t* __restrict row = lt + v * ld;
    if (bias != nullptr) {
      const scalar_t b = bias[v];
#pragma omp simd
      for (int64_t c = c0; c < c1; ++c) {
        const scalar_t x = row[c] + b;
        row[c] = x;
        bm[c] = x > bm[c] ? x : bm[c];
      }
    } else {
#pragma omp simd
      for (int64_t c = c0; c < c1; ++c) bm[c] = row[c] > bm[c] ? row[c] : bm[c];
    }
  }
  for (int64_t c = c0; c < c1; ++c) {
    const int64_t t = target[c];
    if (t != ignore_index && t >= v0 && t < v0 + rows) target_logit[c] = lt[(t - v0) * ld + c];
  }
  scalar_t* __restrict s = sm;
#pragma omp simd
  for (int64_t c = c0; c < c1; ++c) {
    s[c] *= exp_of(mx[c] - bm[c]);
    mx[c] = bm[c];
  }
  for (int64_t v = 0; v < rows; ++v) {
    scalar_t* __restrict row = lt + v * ld;
#pragma omp simd
    for (int64_t c = c0; c < c1; ++c) {
      const scalar_t e = exp_of(row[c] - bm[c]);
      row[c] = e;
      s[c] += e;
    }
  }
}

FASTVAE_ISA_VARIANTS(block_stats, block_stats_body,
                     (scalar_t * lt, int64_t rows, int64_t ld, int64_t c0, int64_t c1,
                      const scalar_t* bias, int64_t v0, const int64_t* target, int64_t ignore_index,
                      scalar_t* mx, scalar_t* sm, scalar_t* block_max, scalar_t* target_logit),
                     (lt, rows, ld, c0, c1, bias, v0, target, ignore_index, mx, sm, block_max,
                      target_logit))

// Rows [r0, r1) of a block of exponentials lt [rows, C]: lt *= factor (per
// column); db[v] += the row's sum (db may be null).
template <typename scalar_t>
FASTVAE_INLINE void scale_rows_body(scalar_t* lt, int64_t r0, int64_t r1, int64_t C,
                                    const scalar_t* factor, scalar_t* db) {
  const scalar_t* __restrict f = factor;
  for (int64_t v = r0; v < r1; ++v) {
    scalar_t* __restrict row = lt + v * C;
    scalar_t acc = 0;
#pragma omp simd reduction(+ : acc)
    for (int64_t c = 0; c < C; ++c) {
      const scalar_t d = row[c] * f[c];
      row[c] = d;
      acc += d;
    }
    if (db != nullptr) db[v] += acc;
  }
}

FASTVAE_ISA_VARIANTS(scale_rows, scale_rows_body,
                     (scalar_t * lt, int64_t r0, int64_t r1, int64_t C, const scalar_t* factor,
                      scalar_t* db),
                     (lt, r0, r1, C, factor, db))

// Rows [r0, r1) of a block of raw logits lt [rows, C] (bias not yet added):
// lt = exp(l + bias - lse) * g (per column), db[v] += the row's sum.
template <typename scalar_t>
FASTVAE_INLINE void softmax_rows_body(scalar_t* lt, int64_t r0, int64_t r1, int64_t C,
                                      const scalar_t* bias, const scalar_t* lse, const scalar_t* g,
                                      scalar_t* db) {
  const scalar_t* __restrict ls = lse;
  const scalar_t* __restrict gs = g;
  for (int64_t v = r0; v < r1; ++v) {
    scalar_t* __restrict row = lt + v * C;
    const scalar_t b = bias != nullptr ? bias[v] : scalar_t(0);
    scalar_t acc = 0;
#pragma omp simd reduction(+ : acc)
    for (int64_t c = 0; c < C; ++c) {
      const scalar_t d = exp_of(row[c] + b - ls[c]) * gs[c];
      row[c] = d;
      acc += d;
    }
    if (db != nullptr) db[v] += acc;
  }
}

FASTVAE_ISA_VARIANTS(softmax_rows, softmax_rows_body,
                     (scalar_t * lt, int64_t r0, int64_t r1, int64_t C, const scalar_t* bias,
                      const scalar_t* lse, const scalar_t* g, scalar_t* db),
                     (lt, r0, r1, C, bias, lse, g, db))

// dl -= onehot(target) * scale for the columns whose target lies in the block
// [v0, v0 + rows); db follows.
template <typename scalar_t>
void subtract_onehot(scalar_t* lt, int64_t rows, int64_t C, int64_t v0, const int64_t* target,
                     int64_t ignore_index, const scalar_t* scale, scalar_t* db) {
  for (int64_t c = 0; c < C; ++c) {
    const int64_t t = target[c];
    if (t == ignore_index || t < v0 || t >= v0 + rows) continue;
    lt[(t - v0) * C + c] -= scale[c];
    if (db != nullptr) db[t - v0] -= scale[c];
  }
}

int64_t row_grain(int64_t C) { return std::max<int64_t>(1, kParallelElems / std::max<int64_t>(C, 1)); }

// ----------------------------------------------------------------- checks --

struct Dims {
  int64_t N, H, V;
};

Dims check_args(const at::Tensor& hidden, const at::Tensor& weight,
                const c10::optional<at::Tensor>& bias_opt, const at::Tensor& target) {
  FASTVAE_CHECK_DIM(hidden, 2);
  FASTVAE_CHECK_FLOAT(hidden);
  FASTVAE_CHECK_DIM(weight, 2);
  const int64_t N = hidden.size(0), H = hidden.size(1), V = weight.size(0);
  FASTVAE_CHECK_SHAPE(weight, V, H);
  TORCH_CHECK_VALUE(V >= 1, "fastvae.linear_cross_entropy: argument 'weight' must have at least one row (class)");
  TORCH_CHECK_TYPE(weight.scalar_type() == hidden.scalar_type(),
                   "fastvae.linear_cross_entropy: argument 'weight' must have hidden's dtype ",
                   hidden.scalar_type(), ", got ", weight.scalar_type());
  if (bias_opt.has_value()) {
    const at::Tensor& bias = *bias_opt;
    FASTVAE_CHECK_SHAPE(bias, V);
    TORCH_CHECK_TYPE(bias.scalar_type() == hidden.scalar_type(),
                     "fastvae.linear_cross_entropy: argument 'bias' must have hidden's dtype ",
                     hidden.scalar_type(), ", got ", bias.scalar_type());
  }
  TORCH_CHECK_TYPE(target.scalar_type() == at::kLong,
                   "fastvae.linear_cross_entropy: argument 'target' must be int64, got ", target.scalar_type());
  FASTVAE_CHECK_SHAPE(target, N);
  return {N, H, V};
}

// Number of targets != ignore_index; every other target must lie in [0, V).
int64_t count_valid(const int64_t* target, int64_t N, int64_t V, int64_t ignore_index) {
  int64_t n = 0;
  for (int64_t i = 0; i < N; ++i) {
    const int64_t t = target[i];
    if (t == ignore_index) continue;
    TORCH_CHECK_VALUE(t >= 0 && t < V, "fastvae.linear_cross_entropy: argument 'target' must hold class indices in [0, ",
                      V, ") or ignore_index (", ignore_index, "), got target[", i, "] = ", t);
    ++n;
  }
  return n;
}

// ---------------------------------------------------------------- drivers --

template <typename scalar_t>
struct Problem {
  int64_t N, H, V;
  const scalar_t* hidden;  // [N, H]
  const scalar_t* weight;  // [V, H]
  const scalar_t* bias;    // [V] or null
  const int64_t* target;   // [N]
  int64_t ignore_index;
};

struct Outputs {
  bool dh, dw, db;
  bool any() const { return dh || dw || db; }
};

// Forward. lse_out [N]; loss_rows [N] or null; returns the sum of the losses.
// With grads.any(): the gradients of sum_n scale * loss_n into dh [N, H],
// dw [V, H] (overwritten), db [V] (accumulated: pass zeros).
template <typename scalar_t>
double fwd_impl(const Problem<scalar_t>& p, scalar_t scale_valid, Outputs grads, scalar_t* lse_out,
                scalar_t* loss_rows, scalar_t* dh, scalar_t* dw, scalar_t* db) {
  const int64_t N = p.N, H = p.H, V = p.V;
  const int64_t C = chunk_rows(N, V);
  const int64_t VB = std::min(kVocabBlock, V);
  const int64_t n_blocks = (V + VB - 1) / VB;
  const auto opts = at::TensorOptions().dtype(c10::CppTypeToScalarType<scalar_t>::value);
  // The whole l^T [V, C] when the gradients follow, else one block.
  at::Tensor buf_t = at::empty({(grads.any() ? V : VB) * C}, opts);
  scalar_t* buf = buf_t.data_ptr<scalar_t>();
  std::vector<scalar_t> mx(C), sm(C), tl(C), scale(C), factor(C), block_max(n_blocks * C);
  double loss_sum = 0;
  for (int64_t r0 = 0; r0 < N; r0 += C) {
    const int64_t cc = std::min(C, N - r0);
    const scalar_t* hc = p.hidden + r0 * H;
    const int64_t* tc = p.target + r0;
    std::fill(mx.begin(), mx.end(), std::numeric_limits<scalar_t>::lowest());
    std::fill(sm.begin(), sm.end(), scalar_t(0));
    std::fill(tl.begin(), tl.end(), scalar_t(0));
    const RightOperand<scalar_t> hc_t(true, H, cc, hc, H);  // h_c^T [H, cc]
    for (int64_t blk = 0; blk < n_blocks; ++blk) {
      const int64_t v0 = blk * VB, rows = std::min(VB, V - v0);
      scalar_t* lt = buf + (grads.any() ? v0 * cc : 0);
      hc_t.multiply(false, rows, p.weight + v0 * H, H, 0, lt, cc);
      const scalar_t* bias = p.bias != nullptr ? p.bias + v0 : nullptr;
      scalar_t* bmax = block_max.data() + blk * cc;
      at::parallel_for(0, cc, std::max<int64_t>(16, kParallelElems / rows), [&](int64_t c0, int64_t c1) {
        block_stats<scalar_t>(lt, rows, cc, c0, c1, bias, v0, tc, p.ignore_index, mx.data(), sm.data(),
                              bmax, tl.data());
      });
    }
    for (int64_t c = 0; c < cc; ++c) {
      const scalar_t lse = mx[c] + std::log(sm[c]);
      lse_out[r0 + c] = lse;
      const bool valid = tc[c] != p.ignore_index;
      const scalar_t loss = valid ? lse - tl[c] : scalar_t(0);
      if (loss_rows != nullptr) loss_rows[r0 + c] = loss;
      loss_sum += static_cast<double>(loss);
      scale[c] = valid ? scale_valid : scalar_t(0);
    }
    if (!grads.any()) continue;
    const RightOperand<scalar_t> hc_n(false, cc, H, hc, H);  // h_c [cc, H]
    for (int64_t blk = 0; blk < n_blocks; ++blk) {
      const int64_t v0 = blk * VB, rows = std::min(VB, V - v0);
      scalar_t* lt = buf + v0 * cc;
      const scalar_t* bmax = block_max.data() + blk * cc;
      for (int64_t c = 0; c < cc; ++c) factor[c] = exp_of(bmax[c] - mx[c]) / sm[c] * scale[c];
      scalar_t* dbb = grads.db ? db + v0 : nullptr;
      at::parallel_for(0, rows, row_grain(cc), [&](int64_t a, int64_t b) {
        scale_rows<scalar_t>(lt, a, b, cc, factor.data(), dbb);
      });
      subtract_onehot<scalar_t>(lt, rows, cc, v0, tc, p.ignore_index, scale.data(), dbb);
      if (grads.dw) hc_n.multiply(false, rows, lt, cc, r0 == 0 ? 0 : 1, dw + v0 * H, H);
      if (grads.dh)
        gemm<scalar_t>(true, false, cc, H, rows, 1, lt, cc, p.weight + v0 * H, H, blk == 0 ? 0 : 1,
                       dh + r0 * H, H);
    }
  }
  return loss_sum;
}

// Backward by recomputation: the gradients of sum_n g[n] * loss_n (g [N] is
// zero at ignored rows) into dh [N, H], dw [V, H] (overwritten), db [V]
// (accumulated: pass zeros).
template <typename scalar_t>
void bwd_impl(const Problem<scalar_t>& p, const scalar_t* g, const scalar_t* lse, Outputs grads,
              scalar_t* dh, scalar_t* dw, scalar_t* db) {
  const int64_t N = p.N, H = p.H, V = p.V;
  const int64_t C = chunk_rows(N, V);
  const int64_t VB = std::min(kVocabBlock, V);
  const auto opts = at::TensorOptions().dtype(c10::CppTypeToScalarType<scalar_t>::value);
  at::Tensor buf_t = at::empty({VB * C}, opts);
  scalar_t* lt = buf_t.data_ptr<scalar_t>();
  for (int64_t r0 = 0; r0 < N; r0 += C) {
    const int64_t cc = std::min(C, N - r0);
    const scalar_t* hc = p.hidden + r0 * H;
    const int64_t* tc = p.target + r0;
    const RightOperand<scalar_t> hc_t(true, H, cc, hc, H);
    const RightOperand<scalar_t> hc_n(false, cc, H, hc, H);
    for (int64_t v0 = 0; v0 < V; v0 += VB) {
      const int64_t rows = std::min(VB, V - v0);
      hc_t.multiply(false, rows, p.weight + v0 * H, H, 0, lt, cc);
      const scalar_t* bias = p.bias != nullptr ? p.bias + v0 : nullptr;
      scalar_t* dbb = grads.db ? db + v0 : nullptr;
      at::parallel_for(0, rows, row_grain(cc), [&](int64_t a, int64_t b) {
        softmax_rows<scalar_t>(lt, a, b, cc, bias, lse + r0, g + r0, dbb);
      });
      subtract_onehot<scalar_t>(lt, rows, cc, v0, tc, p.ignore_index, g + r0, dbb);
      if (grads.dw) hc_n.multiply(false, rows, lt, cc, r0 == 0 ? 0 : 1, dw + v0 * H, H);
      if (grads.dh)
        gemm<scalar_t>(true, false, cc, H, rows, 1, lt, cc, p.weight + v0 * H, H, v0 == 0 ? 0 : 1,
                       dh + r0 * H, H);
    }
  }
}

Outputs outputs_for(const std::array<bool, 3>& grad_mask, bool has_bias) {
  return {grad_mask[0], grad_mask[1], grad_mask[2] && has_bias};
}

// d_hidden / d_weight / d_bias buffers (empty [0] when not requested).
std::array<at::Tensor, 3> grad_buffers(const Dims& d, Outputs o, const at::TensorOptions& opts) {
  auto dense = [&](bool on, at::IntArrayRef shape) {
    if (!on) return at::empty({0}, opts);
    return d.N == 0 ? at::zeros(shape, opts) : at::empty(shape, opts);  // N = 0: no chunk writes them
  };
  return {dense(o.dh, {d.N, d.H}), dense(o.dw, {d.V, d.H}), o.db ? at::zeros({d.V}, opts) : at::empty({0}, opts)};
}

template <typename scalar_t>
scalar_t* ptr_or_null(const at::Tensor& t) {
  return t.numel() > 0 ? t.data_ptr<scalar_t>() : nullptr;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> linear_ce_fwd_cpu(
    const at::Tensor& hidden_in, const at::Tensor& weight_in, const c10::optional<at::Tensor>& bias_in,
    const at::Tensor& target_in, int64_t ignore_index, c10::string_view reduction_str,
    std::array<bool, 3> grad_mask) {
  const Dims d = check_args(hidden_in, weight_in, bias_in, target_in);
  const Reduction reduction = parse_reduction(reduction_str);
  const Outputs grads = outputs_for(grad_mask, bias_in.has_value());
  TORCH_CHECK_VALUE(reduction != Reduction::None || !(grad_mask[0] || grad_mask[1] || grad_mask[2]),
                    "fastvae.linear_ce_fwd: reduction 'none' computes its gradients in linear_ce_bwd; "
                    "grad_mask must be all false");
  const auto hidden = hidden_in.contiguous();
  const auto weight = weight_in.contiguous();
  const auto bias = bias_in.has_value() ? bias_in->contiguous() : at::Tensor();
  const auto target = target_in.contiguous();
  const int64_t n_valid = count_valid(target.data_ptr<int64_t>(), d.N, d.V, ignore_index);
  const auto opts = hidden.options();
  auto lse = at::empty({d.N}, opts);
  auto loss = reduction == Reduction::None ? at::empty({d.N}, opts) : at::empty({}, opts);
  const auto bufs = grad_buffers(d, grads, opts);
  const at::Tensor &dh = bufs[0], &dw = bufs[1], &db = bufs[2];
  AT_DISPATCH_FLOATING_TYPES(hidden.scalar_type(), "fastvae_linear_ce_fwd", [&] {
    const Problem<scalar_t> p{d.N, d.H, d.V, hidden.data_ptr<scalar_t>(), weight.data_ptr<scalar_t>(),
                              bias.defined() ? bias.data_ptr<scalar_t>() : nullptr,
                              target.data_ptr<int64_t>(), ignore_index};
    const double mean_div = static_cast<double>(std::max<int64_t>(n_valid, 1));
    const scalar_t scale = reduction == Reduction::Mean ? scalar_t(1.0 / mean_div) : scalar_t(1);
    const double total =
        fwd_impl<scalar_t>(p, scale, grads, lse.data_ptr<scalar_t>(),
                           reduction == Reduction::None ? loss.data_ptr<scalar_t>() : nullptr,
                           ptr_or_null<scalar_t>(dh), ptr_or_null<scalar_t>(dw), ptr_or_null<scalar_t>(db));
    if (reduction != Reduction::None)
      loss.fill_(reduction == Reduction::Mean ? total / mean_div : total);
  });
  return {loss, lse, dh, dw, db};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> linear_ce_bwd_cpu(
    const at::Tensor& grad_loss, const at::Tensor& hidden_in, const at::Tensor& weight_in,
    const c10::optional<at::Tensor>& bias_in, const at::Tensor& target_in, const at::Tensor& lse_in,
    int64_t ignore_index, c10::string_view reduction_str, std::array<bool, 3> grad_mask) {
  const Dims d = check_args(hidden_in, weight_in, bias_in, target_in);
  const Reduction reduction = parse_reduction(reduction_str);
  if (reduction == Reduction::None) {
    FASTVAE_CHECK_SHAPE(grad_loss, d.N);
  } else {
    FASTVAE_CHECK_DIM(grad_loss, 0);
  }
  FASTVAE_CHECK_SHAPE(lse_in, d.N);
  for (const at::Tensor* t : {&grad_loss, &lse_in}) {
    TORCH_CHECK_TYPE(t->scalar_type() == hidden_in.scalar_type(),
                     "fastvae.linear_ce_bwd: grad_loss and lse must have hidden's dtype ", hidden_in.scalar_type(),
                     ", got ", t->scalar_type());
  }
  const Outputs grads = outputs_for(grad_mask, bias_in.has_value());
  const auto hidden = hidden_in.contiguous();
  const auto weight = weight_in.contiguous();
  const auto bias = bias_in.has_value() ? bias_in->contiguous() : at::Tensor();
  const auto target = target_in.contiguous();
  const auto lse = lse_in.contiguous();
  const int64_t n_valid = count_valid(target.data_ptr<int64_t>(), d.N, d.V, ignore_index);
  const auto opts = hidden.options();
  const auto bufs = grad_buffers(d, grads, opts);
  const at::Tensor &dh = bufs[0], &dw = bufs[1], &db = bufs[2];
  if (!grads.any()) return {dh, dw, db};
  // Per-row upstream gradient, zero at ignored rows.
  at::Tensor g = reduction == Reduction::None ? grad_loss.contiguous().clone() : grad_loss.expand({d.N}).contiguous();
  if (reduction == Reduction::Mean) g.div_(static_cast<double>(std::max<int64_t>(n_valid, 1)));
  g.masked_fill_(target == ignore_index, 0);
  AT_DISPATCH_FLOATING_TYPES(hidden.scalar_type(), "fastvae_linear_ce_bwd", [&] {
    const Problem<scalar_t> p{d.N, d.H, d.V, hidden.data_ptr<scalar_t>(), weight.data_ptr<scalar_t>(),
                              bias.defined() ? bias.data_ptr<scalar_t>() : nullptr,
                              target.data_ptr<int64_t>(), ignore_index};
    bwd_impl<scalar_t>(p, g.data_ptr<scalar_t>(), lse.data_ptr<scalar_t>(), grads, ptr_or_null<scalar_t>(dh),
                       ptr_or_null<scalar_t>(dw), ptr_or_null<scalar_t>(db));
  });
  return {dh, dw, db};
}

TORCH_LIBRARY_IMPL(fastvae, CPU, m) {
  m.impl("linear_ce_fwd", &linear_ce_fwd_cpu);
  m.impl("linear_ce_bwd", &linear_ce_bwd_cpu);
}

}  // namespace cpu
}  // namespace fastvae
