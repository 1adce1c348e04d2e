// CPU kernels of the fused linear + cross-entropy (schemas: csrc/linear_cross_entropy_ops.cpp).
//
//   hidden [N, H], weight [V, H], bias [V] or none, target [N] int64
//   loss_n = logsumexp(l_n) - l_n[target_n],  l_n = weight @ hidden_n + bias
//
// The [N, V] logits are never formed. Tokens go in chunks of C (a multiple
// of 32: whole token panels, csrc/cpu/tile_kernels.h), the vocabulary in
// blocks of VB words. A chunk's scores live in "token panels" -- per 32
// tokens, [words][32] -- so per-token statistics are plain vector loops and
// the three products of a block read them as they are:
//
//   logits     l[block] = weight[block] @ h_c^T + bias   head_logits (+ block max)
//   weight     d_weight[block] += dl[block] @ h_c         head_weight_grad
//   hidden     d_hidden_c^T += weight[block]^T @ dl       head_hidden_grad
//
// Each runs the register-tiled kernels of this CPU's ISA (kernels.h); the
// softmax passes (head_exp, head_scale, head_softmax_grad) are vector loops
// over an L2-resident block.
//
// Forward with gradients ("mean"/"sum"): per chunk, block after block, the
// logits and the running per-token max m and sum s of exp(l - m) (online
// log-sum-exp; the max of each block's logits comes with the product), the
// block overwritten with exp(l - m_block), m_block the running max after it.
// The whole chunk [V, C] stays in a buffer (10 MB at V = 10k, C = 256). After
// the last block, lse = m + log s, and each block turns into
//   dl = (softmax - onehot(target)) * scale,  softmax = exp(l - m_block) * exp(m_block - m) / s
// (scale = 1/n_valid for "mean", 1 for "sum", 0 at ignored rows) and is
// followed by its two gradient products. The backward then only multiplies
// these gradients by the upstream scalar.
//
// Forward without gradients: the same statistics on one [VB, C] block
// buffer. Backward by recomputation (reduction "none", whose upstream
// gradient differs per row): per block, the logits again, dl = (exp(l - lse)
// - onehot) * grad_loss[row], the two gradient products; one [VB, C] buffer.
//
// Threads: the blocks of a chunk are split between threads; each keeps its
// own running statistics and d_hidden partial sums, merged per chunk
// (d_weight rows and the bias gradient of a block belong to one thread).
//
// Rows whose target is ignore_index are dropped first (their loss and
// gradients are zero): a padded batch pays only for its real tokens.
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
#include <mutex>
#include <string>
#include <type_traits>
#include <vector>

#include "../checks.h"
#include "blas.h"
#include "kernels.h"

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

// Chunk and block sizes, tuned fp32 single-thread (AVX2 and AVX-512) at
// N=1280, V=10k, H=32 and H=256 (forward+backward). Per chunk the weight is
// streamed twice and d_weight read and written once (traffic ~ V * H), the
// [V, C] buffer written and read back (~ V * C): 64 tokens per chunk for
// H <= 64 (84 vs 80 GFLOP/s at 128), 256 above -- d_weight's round trip per
// chunk grows with H (AVX-512, N = 1280, V = 10k, alternating builds: H = 256
// 90-93 -> 95-99 GFLOP/s against 128 tokens, AVX2 86-96 -> 89-99 (3 of 5
// alternating runs faster, 1 equal, 1 slower); H = 512
// 81-87 -> 96-97; H = 96 88 -> 92; H = 128 alike; 384 tokens no better than
// 256 at H = 256; 64 tokens gave 61-79). The buffer is capped at
// kMaxChunkElems: larger vocabularies get fewer tokens per chunk (down to one
// panel; 64 at V = 50k). Blocks of 128-512 words measured alike.
constexpr int64_t kSmallHidden = 64;
constexpr int64_t kMaxChunkElems = int64_t(1) << 22;  // 16 MB in fp32
constexpr int64_t kVocabBlock = 256;

int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

int64_t chunk_tokens(int64_t N, int64_t H, int64_t V) {
  int64_t c = H <= kSmallHidden ? 64 : 256;
  while (c > kPanelWidth && c * V > kMaxChunkElems) c /= 2;
  return std::max<int64_t>(kPanelWidth, std::min(c, round_up(N, kPanelWidth)));
}

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

// One chunk of tokens [r0, r0 + cc): its hidden rows transposed into token
// panels (for the logits) and, when d_weight is wanted, in panels over H.
template <typename scalar_t>
struct Chunk {
  int64_t r0, cc, panels, width;  // width = panels * 32 (tokens past cc are zero padding)
  Panels<scalar_t> hT, hP;

  Chunk(const Problem<scalar_t>& p, int64_t r0_, int64_t cc_, bool with_hP)
      : r0(r0_), cc(cc_), panels((cc_ + kPanelWidth - 1) / kPanelWidth), width(panels * kPanelWidth) {
    const scalar_t* h = p.hidden + r0 * p.H;
    pack_panels(true, p.H, cc, h, p.H, hT);                  // h_c^T [H, width]
    if (with_hP) pack_panels(false, cc, p.H, h, p.H, hP, width);  // h_c [width, H]
  }
  // The target of column c within the block [v0, v0 + rows), or -1.
  int64_t target_in(const Problem<scalar_t>& p, int64_t c, int64_t v0, int64_t rows) const {
    const int64_t t = p.target[r0 + c];
    return t != p.ignore_index && t >= v0 && t < v0 + rows ? t - v0 : -1;
  }
};

template <typename scalar_t>
scalar_t& at_token(scalar_t* buf, int64_t ps, int64_t row, int64_t c) {
  return buf[(c / kPanelWidth) * ps + row * kPanelWidth + c % kPanelWidth];
}

// Running per-token statistics of the online log-sum-exp: max m, sum s of exp(l - m).
template <typename scalar_t>
struct TokenStats {
  std::vector<scalar_t> m, s;
  explicit TokenStats(int64_t width) : m(width, std::numeric_limits<scalar_t>::lowest()), s(width, 0) {}
  // Raises m to new_m (>= m), rescaling s.
  void raise(const scalar_t* new_m) {
    for (size_t c = 0; c < m.size(); ++c) {
      s[c] *= std::exp(m[c] - new_m[c]);
      m[c] = new_m[c];
    }
  }
  void merge(const TokenStats& o) {
    for (size_t c = 0; c < m.size(); ++c) {
      const scalar_t hi = std::max(m[c], o.m[c]);
      s[c] = s[c] * std::exp(m[c] - hi) + o.s[c] * std::exp(o.m[c] - hi);
      m[c] = hi;
    }
  }
};

// Reusable per-thread buffers (blas.h: thread_scratch), one per Slot: a
// call's chunk buffer and its tasks' block buffers are different slots of the
// same thread.
enum class Slot { Chunk, ChunkMax, Block, HiddenGrad };

template <typename scalar_t, Slot slot>
scalar_t* scratch(size_t n) {
  return thread_scratch<scalar_t, std::integral_constant<Slot, slot>>(n);
}

// Splits the blocks [0, n_blocks) between threads: fn(b0, b1) per task.
template <typename Fn>
void for_blocks(int64_t n_blocks, const Fn& fn) {
  if (at::get_num_threads() == 1 || n_blocks == 1) {
    fn(0, n_blocks);
    return;
  }
  at::parallel_for(0, n_blocks, 1, fn);
}

// d_hidden rows of the chunk += dhT^T (dhT [H, width]).
template <typename scalar_t>
void add_transposed(const scalar_t* dhT, int64_t H, int64_t cc, int64_t width, scalar_t* dh) {
  for (int64_t c = 0; c < cc; ++c)
    for (int64_t k = 0; k < H; ++k) dh[c * H + k] += dhT[k * width + c];
}

// Forward. lse_out [N]; loss_rows [N] or null; returns the sum of the losses.
// With grads.any(): the gradients of sum_n scale * loss_n into dh [N, H],
// dw [V, H] (overwritten), db [V] (accumulated: pass zeros).
template <typename scalar_t>
double fwd_impl(const Problem<scalar_t>& p, scalar_t scale_valid, Outputs grads, scalar_t* lse_out,
                scalar_t* loss_rows, scalar_t* dh, scalar_t* dw, scalar_t* db) {
  const KernelSet<scalar_t>& ks = kernels<scalar_t>();
  const int64_t N = p.N, H = p.H, V = p.V;
  const int64_t C = chunk_tokens(N, H, V), VB = std::min(kVocabBlock, V);
  const int64_t n_blocks = (V + VB - 1) / VB;
  // With gradients: the chunk's exponentials for all V words (token panels of stride V * 32).
  scalar_t* buf = grads.any() ? scratch<scalar_t, Slot::Chunk>(V * C) : nullptr;
  scalar_t* block_max = grads.any() ? scratch<scalar_t, Slot::ChunkMax>(n_blocks * C) : nullptr;
  std::vector<scalar_t> tl(C), scale(C);
  std::mutex merge_lock;
  double loss_sum = 0;
  for (int64_t r0 = 0; r0 < N; r0 += C) {
    const Chunk<scalar_t> ch(p, r0, std::min(C, N - r0), grads.dw);
    const int64_t np = ch.panels, width = ch.width;
    TokenStats<scalar_t> stats(width);
    for_blocks(n_blocks, [&](int64_t b0, int64_t b1) {
      TokenStats<scalar_t> mine(width);
      scalar_t* local = grads.any() ? nullptr : scratch<scalar_t, Slot::Block>(VB * width);
      std::vector<scalar_t> local_max(grads.any() ? 0 : width);
      for (int64_t blk = b0; blk < b1; ++blk) {
        const int64_t v0 = blk * VB, rows = std::min(VB, V - v0);
        scalar_t* out = grads.any() ? buf + v0 * kPanelWidth : local;
        const int64_t ps = grads.any() ? V * kPanelWidth : VB * kPanelWidth;
        scalar_t* bmax = grads.any() ? block_max + blk * width : local_max.data();
        std::copy(mine.m.begin(), mine.m.end(), bmax);
        ks.head_logits(rows, H, p.weight + v0 * H, H, p.bias != nullptr ? p.bias + v0 : nullptr, ch.hT.data.data(),
                       np, out, ps, bmax);
        for (int64_t c = 0; c < ch.cc; ++c) {
          const int64_t t = ch.target_in(p, c, v0, rows);
          if (t >= 0) tl[c] = at_token(out, ps, t, c);
        }
        mine.raise(bmax);
        ks.head_exp(rows, out, np, ps, mine.m.data(), mine.s.data());
      }
      std::lock_guard<std::mutex> guard(merge_lock);
      stats.merge(mine);
    });
    for (int64_t c = 0; c < width; ++c) {
      const bool real = c < ch.cc;
      const bool valid = real && p.target[r0 + c] != p.ignore_index;
      scale[c] = valid ? scale_valid : scalar_t(0);
      if (!real) continue;
      const scalar_t lse = stats.m[c] + std::log(stats.s[c]);
      lse_out[r0 + c] = lse;
      const scalar_t loss = valid ? lse - tl[c] : scalar_t(0);
      if (loss_rows != nullptr) loss_rows[r0 + c] = loss;
      loss_sum += static_cast<double>(loss);
    }
    if (!grads.any()) continue;
    if (grads.dh) std::fill(dh + r0 * H, dh + (r0 + ch.cc) * H, scalar_t(0));
    const int64_t ps = V * kPanelWidth;
    for_blocks(n_blocks, [&](int64_t b0, int64_t b1) {
      std::vector<scalar_t> f(width);
      scalar_t* dhT = grads.dh ? scratch<scalar_t, Slot::HiddenGrad>(H * width) : nullptr;
      for (int64_t blk = b0; blk < b1; ++blk) {
        const int64_t v0 = blk * VB, rows = std::min(VB, V - v0);
        scalar_t* dl = buf + v0 * kPanelWidth;
        const scalar_t* bmax = block_max + blk * width;
        for (int64_t c = 0; c < width; ++c) f[c] = std::exp(bmax[c] - stats.m[c]) / stats.s[c] * scale[c];
        scalar_t* dbb = grads.db ? db + v0 : nullptr;
        ks.head_scale(rows, dl, np, ps, f.data(), dbb);
        for (int64_t c = 0; c < ch.cc; ++c) {
          const int64_t t = ch.target_in(p, c, v0, rows);
          if (t < 0) continue;
          at_token(dl, ps, t, c) -= scale[c];
          if (dbb != nullptr) dbb[t] -= scale[c];
        }
        if (grads.dw)
          ks.head_weight_grad(rows, H, dl, np, ps, ch.hP.data.data(), ch.hP.stride(), r0 == 0 ? 0 : 1, dw + v0 * H, H);
        if (grads.dh)
          ks.head_hidden_grad(rows, H, p.weight + v0 * H, H, dl, np, ps, blk == b0 ? 0 : 1, dhT, width);
      }
      if (!grads.dh) return;
      std::lock_guard<std::mutex> guard(merge_lock);
      add_transposed(dhT, H, ch.cc, width, dh + r0 * H);
    });
  }
  return loss_sum;
}

// Backward by recomputation: the gradients of sum_n g[n] * loss_n (g [N] is
// zero at ignored rows) into dh [N, H], dw [V, H] (overwritten), db [V]
// (accumulated: pass zeros).
template <typename scalar_t>
void bwd_impl(const Problem<scalar_t>& p, const scalar_t* g, const scalar_t* lse, Outputs grads, scalar_t* dh,
              scalar_t* dw, scalar_t* db) {
  const KernelSet<scalar_t>& ks = kernels<scalar_t>();
  const int64_t N = p.N, H = p.H, V = p.V;
  const int64_t C = chunk_tokens(N, H, V), VB = std::min(kVocabBlock, V);
  const int64_t n_blocks = (V + VB - 1) / VB;
  std::vector<scalar_t> g_c(C), lse_c(C);
  std::mutex merge_lock;
  for (int64_t r0 = 0; r0 < N; r0 += C) {
    const Chunk<scalar_t> ch(p, r0, std::min(C, N - r0), grads.dw);
    const int64_t np = ch.panels, width = ch.width;
    for (int64_t c = 0; c < width; ++c) {  // padding: no gradient, exp(l - inf) = 0
      g_c[c] = c < ch.cc ? g[r0 + c] : scalar_t(0);
      lse_c[c] = c < ch.cc ? lse[r0 + c] : std::numeric_limits<scalar_t>::infinity();
    }
    if (grads.dh) std::fill(dh + r0 * H, dh + (r0 + ch.cc) * H, scalar_t(0));
    const int64_t ps = VB * kPanelWidth;
    for_blocks(n_blocks, [&](int64_t b0, int64_t b1) {
      scalar_t* dl = scratch<scalar_t, Slot::Block>(VB * width);
      scalar_t* dhT = grads.dh ? scratch<scalar_t, Slot::HiddenGrad>(H * width) : nullptr;
      for (int64_t blk = b0; blk < b1; ++blk) {
        const int64_t v0 = blk * VB, rows = std::min(VB, V - v0);
        ks.head_logits(rows, H, p.weight + v0 * H, H, p.bias != nullptr ? p.bias + v0 : nullptr, ch.hT.data.data(),
                       np, dl, ps, nullptr);
        scalar_t* dbb = grads.db ? db + v0 : nullptr;
        ks.head_softmax_grad(rows, dl, np, ps, lse_c.data(), g_c.data(), dbb);
        for (int64_t c = 0; c < ch.cc; ++c) {
          const int64_t t = ch.target_in(p, c, v0, rows);
          if (t < 0) continue;
          at_token(dl, ps, t, c) -= g_c[c];
          if (dbb != nullptr) dbb[t] -= g_c[c];
        }
        if (grads.dw)
          ks.head_weight_grad(rows, H, dl, np, ps, ch.hP.data.data(), ch.hP.stride(), r0 == 0 ? 0 : 1,
                              dw + v0 * H, H);
        if (grads.dh)
          ks.head_hidden_grad(rows, H, p.weight + v0 * H, H, dl, np, ps, blk == b0 ? 0 : 1, dhT, width);
      }
      if (!grads.dh) return;
      std::lock_guard<std::mutex> guard(merge_lock);
      add_transposed(dhT, H, ch.cc, width, dh + r0 * H);
    });
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

// The rows that count: a target equal to ignore_index contributes no loss and
// no gradient, so those rows are dropped before any logit is computed (a
// padded batch pays only for its real tokens). Rows holds the kept rows'
// indices, or is undefined when every row counts.
struct Rows {
  at::Tensor index;  // int64 [n_valid] or undefined (all rows)
  bool all() const { return !index.defined(); }
  at::Tensor take(const at::Tensor& t) const { return all() ? t : t.index_select(0, index).contiguous(); }
  // A full-size [N, ...] tensor from the kept rows' values (zero at dropped rows).
  at::Tensor spread(const at::Tensor& kept, int64_t N) const {
    if (all()) return kept;
    auto shape = kept.sizes().vec();
    shape[0] = N;
    return at::zeros(shape, kept.options()).index_copy_(0, index, kept);
  }
};

Rows valid_rows(const at::Tensor& target, int64_t n_valid, int64_t ignore_index) {
  if (n_valid == target.size(0)) return {};
  return {at::nonzero(target != ignore_index).view({-1})};
}

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
  const Rows rows = valid_rows(target, n_valid, ignore_index);
  const at::Tensor h_kept = rows.take(hidden), t_kept = rows.take(target);
  const Dims kept{n_valid, d.H, d.V};
  const auto opts = hidden.options();
  auto lse = at::empty({n_valid}, opts);
  auto loss = reduction == Reduction::None ? at::empty({n_valid}, opts) : at::empty({}, opts);
  const auto bufs = grad_buffers(kept, grads, opts);
  at::Tensor dh = bufs[0];
  const at::Tensor &dw = bufs[1], &db = bufs[2];
  AT_DISPATCH_FLOATING_TYPES(hidden.scalar_type(), "fastvae_linear_ce_fwd", [&] {
    const Problem<scalar_t> p{n_valid, d.H, d.V, h_kept.data_ptr<scalar_t>(), weight.data_ptr<scalar_t>(),
                              bias.defined() ? bias.data_ptr<scalar_t>() : nullptr,
                              t_kept.data_ptr<int64_t>(), ignore_index};
    const double mean_div = static_cast<double>(std::max<int64_t>(n_valid, 1));
    const scalar_t scale = reduction == Reduction::Mean ? scalar_t(1.0 / mean_div) : scalar_t(1);
    const double total =
        fwd_impl<scalar_t>(p, scale, grads, lse.data_ptr<scalar_t>(),
                           reduction == Reduction::None ? loss.data_ptr<scalar_t>() : nullptr,
                           ptr_or_null<scalar_t>(dh), ptr_or_null<scalar_t>(dw), ptr_or_null<scalar_t>(db));
    if (reduction != Reduction::None)
      loss.fill_(reduction == Reduction::Mean ? total / mean_div : total);
  });
  if (reduction == Reduction::None) loss = rows.spread(loss, d.N);
  if (grads.dh) dh = rows.spread(dh, d.N);
  return {loss, rows.spread(lse, d.N), dh, dw, db};
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
  const Rows rows = valid_rows(target, n_valid, ignore_index);
  const Dims kept{n_valid, d.H, d.V};
  const auto bufs = grad_buffers(kept, grads, hidden.options());
  at::Tensor dh = bufs[0];
  const at::Tensor &dw = bufs[1], &db = bufs[2];
  if (!grads.any()) return {dh, dw, db};
  // Per-row upstream gradient of the kept rows.
  at::Tensor g = reduction == Reduction::None ? rows.take(grad_loss.contiguous()).clone()
                                              : grad_loss.expand({n_valid}).contiguous();
  if (reduction == Reduction::Mean) g.div_(static_cast<double>(std::max<int64_t>(n_valid, 1)));
  const at::Tensor h_kept = rows.take(hidden), t_kept = rows.take(target), lse_kept = rows.take(lse);
  AT_DISPATCH_FLOATING_TYPES(hidden.scalar_type(), "fastvae_linear_ce_bwd", [&] {
    const Problem<scalar_t> p{n_valid, d.H, d.V, h_kept.data_ptr<scalar_t>(), weight.data_ptr<scalar_t>(),
                              bias.defined() ? bias.data_ptr<scalar_t>() : nullptr,
                              t_kept.data_ptr<int64_t>(), ignore_index};
    bwd_impl<scalar_t>(p, g.data_ptr<scalar_t>(), lse_kept.data_ptr<scalar_t>(), grads, ptr_or_null<scalar_t>(dh),
                       ptr_or_null<scalar_t>(dw), ptr_or_null<scalar_t>(db));
  });
  if (grads.dh) dh = rows.spread(dh, d.N);
  return {dh, dw, db};
}

TORCH_LIBRARY_IMPL(fastvae, CPU, m) {
  m.impl("linear_ce_fwd", &linear_ce_fwd_cpu);
  m.impl("linear_ce_bwd", &linear_ce_bwd_cpu);
}

}  // namespace cpu
}  // namespace fastvae
