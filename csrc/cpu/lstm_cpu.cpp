// CPU kernels of the fused LSTM (schemas: csrc/lstm_ops.cpp): one layer, one direction, and the stack.
//
// Layout (time-major, all contiguous):
//   x       [T, B, E]   input sequence
//   h0, c0  [B, H]      initial state
//   w_ih    [4H, E]     input weights, gate blocks i, f, g, o (nn.LSTM order)
//   w_hh    [4H, H]     recurrent weights
//   b_ih, b_hh [4H]     optional biases (summed once per call)
//   lengths [B] int64   CPU, each in 1..T (absent: all T)
// Row b at step s is active while s < lengths[b] and then works on time
// position p = s (forward) or lengths[b]-1-s (reverse); an inactive row holds
// its state. This is exactly nn.LSTM on a PackedSequence -- and it is run
// like one: the rows are visited longest first, so the rows still running at
// step s are the first n[s] of that order, and only they enter the products
// (the input projection, the recurrent product, the gradients): a padded
// batch costs its real tokens, not T * B.
//
// Saved for backward, indexed by position p (zero where p >= lengths[b]):
//   gates  [T, B, 4H]  post-activation i, f, g, o (the input-projection buffer,
//                      overwritten in place)
//   cprev  [T, B, H]   cell state before the step
//   tanh_c [T, B, H]   tanh of the cell state after the step
//   hprev  [T, B, H]   hidden state before the step
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <c10/util/accumulate.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <type_traits>
#include <vector>

#include "../checks.h"
#include "blas.h"
#include "isa.h"
#include "kernels.h"

namespace fastvae {
namespace cpu {
namespace {

// Rows per parallel chunk: keep ~32k gate values per task so small batches
// stay on one thread (a parallel region costs microseconds per step).
int64_t row_grain(int64_t H) { return std::max<int64_t>(1, 32768 / (4 * H)); }

// The cell arithmetic of one row (one sequence) lives in the tile kernels
// (csrc/cpu/tile_kernels.h: lstm_fwd_row, lstm_bwd_row), compiled for this
// CPU's ISA; the drivers below pick the rows of each step.

// The (step, row) pairs a padded batch runs, in "step-major" packed order:
// rows sorted by length, longest first (stable), so at step s the running
// rows are the sorted ranks j < n[s]; pair (s, j) is packed row off[s] + j.
struct Schedule {
  int64_t T = 0, B = 0;
  bool reverse = false;
  bool identity = false;       // all rows full and forward: packed row = the [T, B] index
  std::vector<int64_t> order;  // sorted rank j -> batch row
  std::vector<int64_t> len;    // length of sorted rank j
  std::vector<int64_t> n;      // rows running at step s, non-increasing
  std::vector<int64_t> off;    // off[s] = n[0] + ... + n[s-1]; off[T] = every pair

  Schedule(const int64_t* lengths, int64_t T_, int64_t B_, bool reverse_)
      : T(T_), B(B_), reverse(reverse_), order(B_), len(B_), n(T_), off(T_ + 1, 0) {
    for (int64_t b = 0; b < B; ++b) order[b] = b;
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t c) { return lengths[a] > lengths[c]; });
    bool full = true;
    for (int64_t j = 0; j < B; ++j) {
      len[j] = lengths[order[j]];
      full = full && len[j] == T;
    }
    identity = full && !reverse;
    for (int64_t s = 0, j = B; s < T; ++s) {
      while (j > 0 && len[j - 1] <= s) --j;
      n[s] = j;
      off[s + 1] = off[s] + j;
    }
  }
  int64_t total() const { return off[T]; }
  // The [T, B] index (position * B + batch row) of sorted rank j at step s.
  int64_t flat(int64_t j, int64_t s) const { return (reverse ? len[j] - 1 - s : s) * B + order[j]; }
  // rows [T * B, width] -> packed [total, width] (src row flat(j, s) for packed row off[s] + j).
  template <typename scalar_t>
  void gather(const scalar_t* src, int64_t width, scalar_t* dst) const {
    for (int64_t s = 0; s < T; ++s)
      for (int64_t j = 0; j < n[s]; ++j)
        std::copy(src + flat(j, s) * width, src + (flat(j, s) + 1) * width, dst + (off[s] + j) * width);
  }
  // The inverse: packed rows to their [T, B] rows (the others untouched).
  template <typename scalar_t>
  void scatter(const scalar_t* src, int64_t width, scalar_t* dst) const {
    for (int64_t s = 0; s < T; ++s)
      for (int64_t j = 0; j < n[s]; ++j)
        std::copy(src + (off[s] + j) * width, src + (off[s] + j + 1) * width, dst + flat(j, s) * width);
  }
  // [B, width] rows in batch order <-> sorted order.
  template <typename scalar_t>
  void sort_rows(const scalar_t* src, int64_t width, scalar_t* dst) const {
    for (int64_t j = 0; j < B; ++j) std::copy(src + order[j] * width, src + (order[j] + 1) * width, dst + j * width);
  }
  template <typename scalar_t>
  void unsort_rows(const scalar_t* src, int64_t width, scalar_t* dst) const {
    for (int64_t j = 0; j < B; ++j) std::copy(src + j * width, src + (j + 1) * width, dst + order[j] * width);
  }
};

// ------------------------------------------------------------ validation --

struct Dims {
  int64_t T, B, E, H;
};

// b_ih + b_hh as one [4H] vector (undefined when there is no bias).
at::Tensor combined_bias(const c10::optional<at::Tensor>& b_ih, const c10::optional<at::Tensor>& b_hh,
                         int64_t H, c10::ScalarType dtype) {
  for (const auto* b : {&b_ih, &b_hh}) {
    if (!b->has_value()) continue;
    const at::Tensor& t = **b;
    TORCH_CHECK_VALUE(t.dim() == 1 && t.size(0) == 4 * H, "fastvae: biases b_ih/b_hh must have shape [",
                      4 * H, "], got ", t.sizes());
    TORCH_CHECK_TYPE(t.scalar_type() == dtype, "fastvae: biases must have x's dtype ", dtype, ", got ",
                     t.scalar_type());
  }
  if (b_ih.has_value() && b_hh.has_value()) {
    const auto a = b_ih->contiguous(), b = b_hh->contiguous();
    auto sum = at::empty({4 * H}, a.options());
    AT_DISPATCH_FLOATING_TYPES(dtype, "fastvae_lstm_bias", [&] {
      const scalar_t *pa = a.data_ptr<scalar_t>(), *pb = b.data_ptr<scalar_t>();
      scalar_t* ps = sum.data_ptr<scalar_t>();
      for (int64_t i = 0; i < 4 * H; ++i) ps[i] = pa[i] + pb[i];
    });
    return sum;
  }
  if (b_ih.has_value()) return b_ih->contiguous();
  if (b_hh.has_value()) return b_hh->contiguous();
  return at::Tensor();
}

// The small per-call tensors (states, biases, lengths) are handled without
// ATen's elementwise ops: at the DailyDialog size a fwd+bwd made ~20 of them
// (copies, fills, sums, stacks of [B, H] states, each microseconds of
// TensorIterator set-up); plain copies and loops instead: the module's
// fwd+bwd 1.74-1.83 -> 1.65-1.69 ms (min thread CPU time, AVX-512).

// dst (contiguous) = src (argument `name`, dst's shape and dtype), or zero when src is undefined.
void copy_or_zero(const at::Tensor& src, at::Tensor& dst, const char* name) {
  if (!src.defined()) {
    std::memset(dst.data_ptr(), 0, dst.nbytes());
    return;
  }
  TORCH_CHECK_TYPE(src.scalar_type() == dst.scalar_type(), "fastvae.lstm: argument '", name, "' must have dtype ",
                   dst.scalar_type(), ", got ", src.scalar_type());
  // The callers check the shape with a named error first; this guards the raw copy below.
  TORCH_CHECK(src.sizes() == dst.sizes(), "fastvae: internal error: '", name, "' has shape ", src.sizes(),
              ", its copy ", dst.sizes());
  if (src.is_contiguous()) {
    std::memcpy(dst.data_ptr(), src.data_ptr(), dst.nbytes());
  } else {
    dst.copy_(src);
  }
}

// A contiguous copy of t.
at::Tensor contiguous_copy(const at::Tensor& t) {
  auto out = at::empty(t.sizes(), t.options());
  copy_or_zero(t, out, "t");
  return out;
}

// The lengths, validated, as an int64 array (all T when absent).
class RowLengths {
 public:
  RowLengths(const c10::optional<at::Tensor>& lengths, int64_t B, int64_t T) {
    if (lengths.has_value()) {
      check_lengths(*lengths, B, T);
      tensor_ = lengths->contiguous();
      data_ = tensor_.data_ptr<int64_t>();
    } else {
      full_.assign(static_cast<size_t>(B), T);
      data_ = full_.data();
    }
  }
  RowLengths(const RowLengths&) = delete;
  RowLengths& operator=(const RowLengths&) = delete;
  const int64_t* data() const { return data_; }

 private:
  at::Tensor tensor_;
  std::vector<int64_t> full_;
  const int64_t* data_;
};

Dims check_lstm_args(const at::Tensor& x, const at::Tensor& h0, const at::Tensor& c0,
                     const at::Tensor& w_ih, const at::Tensor& w_hh) {
  FASTVAE_CHECK_DIM(x, 3);
  FASTVAE_CHECK_DIM(w_hh, 2);
  const int64_t T = x.size(0), B = x.size(1), E = x.size(2), H = w_hh.size(1);
  FASTVAE_CHECK_FLOAT(x);
  FASTVAE_CHECK_SHAPE(w_ih, 4 * H, E);
  FASTVAE_CHECK_SHAPE(w_hh, 4 * H, H);
  FASTVAE_CHECK_SHAPE(h0, B, H);
  FASTVAE_CHECK_SHAPE(c0, B, H);
  for (const at::Tensor* t : {&h0, &c0, &w_ih, &w_hh}) {
    TORCH_CHECK_TYPE(t->scalar_type() == x.scalar_type(), "fastvae.lstm: all tensors must have x's dtype ",
                     x.scalar_type(), ", got ", t->scalar_type());
  }
  return {T, B, E, H};
}

bool all_full(const int64_t* len, int64_t B, int64_t T) {
  for (int64_t b = 0; b < B; ++b)
    if (len[b] != T) return false;
  return true;
}

// ---------------------------------------------------------------- drivers --

// A call's internal temporaries (never returned) as tensors over per-thread
// buffers reused from call to call (blas.h: thread_scratch; fresh allocations
// of this size are page-faulted in on every call -- at the DailyDialog size
// that cost more than the cell arithmetic). Above kMaxTemp values a buffer is
// allocated per call, so a thread keeps at most eight buffers of kMaxTemp values
// (64 MB in fp32; the Sentence-VAE size needs 1.3 M for its largest, the gate
// gradients).
// A forward and a backward never run inside one another on a thread, so the
// forward's packed inputs and gates (padded batches) take the backward's slots.
enum Tmp { kPre, kRec, kGradGates, kInputs, kHidden, kWeightGradT, kStepInput, kGradInputs };
constexpr int64_t kMaxTemp = int64_t(1) << 21;  // 8 MB in fp32

template <typename scalar_t, Tmp slot>
at::Tensor temporary(at::IntArrayRef shape, const at::TensorOptions& opts) {
  const int64_t n = c10::multiply_integers(shape);
  if (n > kMaxTemp) return at::empty(shape, opts);
  return at::from_blob(thread_scratch<scalar_t, std::integral_constant<Tmp, slot>>(static_cast<size_t>(n)), shape,
                       opts);
}

// The values [offset, offset + numel(shape)) of the contiguous `block` as a
// tensor of `shape` that does not own them (the caller keeps `block` alive
// while it is used): no dispatcher call, where narrow + view cost two each
// (the DailyDialog-size stack is mostly per-call overhead).
inline at::Tensor part_of(const at::Tensor& block, int64_t offset, at::IntArrayRef shape) {
  char* base = static_cast<char*>(block.data_ptr()) + offset * block.element_size();
  return at::from_blob(base, shape, block.options());
}

// Asks for n values at p to be brought into L1. The cell step reads each row's
// input projection (and, backward, its saved activations) from buffers of
// T * B rows, far larger than L2: without this the row loop waited on those
// loads (perf: ~40% of its time at the Sentence-VAE size, AMD EPYC Zen 4).
// Each row fetches the next one's while it computes -- except in the backward
// on an Intel CPU (prefetch_saved_rows), whose hardware prefetchers follow
// those streams: there the prefetches (to L1 or L2, 1-8 rows ahead) only
// stalled the loop (Xeon, Sentence-VAE size: the backward's cell rows 1.4-1.7
// ms without, 1.8-2.3 ms with).
template <typename scalar_t>
inline void prefetch_row(const scalar_t* p, int64_t n) {
  constexpr int64_t kLine = 64 / sizeof(scalar_t);
  for (int64_t k = 0; k < n; k += kLine) __builtin_prefetch(p + k, 0, 3);
}

inline bool prefetch_saved_rows() { return !cpu_is_intel(); }

template <typename scalar_t>
bool all_zero(const scalar_t* p, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    if (p[i] != scalar_t(0)) return false;
  return true;
}

// A full batch run forward (the step-major order is the [T, B] order) may
// take its input projection step by step: each step is [h | x_s] @ [w_hh |
// w_ih]^T, one product of depth H + E (h lives in the step's input buffer,
// where the rows write it; x_s is copied in), into one [B, 4H] block that the
// cell rows read while it is still in L2 (one product rather than two: the
// second no longer reads the first's result back; the DailyDialog forward
// 0.62 -> 0.60 ms, min thread CPU time on AVX-512 Zen 4). The all-steps
// projection first writes T * B * 4H values out to L3 and reads them back a
// step later; but then each step multiplies by w_hh alone, and where w_hh's
// panels fit in half the L2 and the stacked ones do not, the step's product
// reads its right operand from L2 instead of L3 -- that wins: the
// Sentence-VAE size (w_hh 1 MB, stacked 2.3 MB) on a 2 MB-L2 Xeon, fwd 10.4
// -> 9.9 ms, fwd+bwd 40.5 -> 38.4 ms. On a 1 MB-L2 core (Zen 4) w_hh does not
// fit half of it either, and the stacked product stays (~3% faster there).
template <typename scalar_t>
bool fuse_input_projection(int64_t E, int64_t H) {
  if constexpr (std::is_same_v<scalar_t, float>) {
    if (!tiled_float_gemm()) return false;
    const int64_t half_l2 = l2_cache_bytes() / 2, bytes = static_cast<int64_t>(sizeof(float)) * 4 * H;
    const bool stacked_fits = (H + E) * bytes <= half_l2, recurrent_fits = H * bytes <= half_l2;
    return stacked_fits || !recurrent_fits;  // both products on prepacked panels
  } else {
    return false;  // double: every product is a BLAS call
  }
}

// Whether lstm_fwd_impl runs a layer through lstm_fwd_fused (which needs no
// activation buffer of its own).
template <typename scalar_t>
bool runs_fused(const Schedule& sc, const Dims& d) {
  return sc.identity && fuse_input_projection<scalar_t>(d.E, d.H);
}

template <typename scalar_t>
void lstm_fwd_fused(const Dims& d, const at::Tensor& x, const at::Tensor& w_ih, const at::Tensor& w_hh,
                    const scalar_t* bias, at::Tensor& gates, at::Tensor& y, at::Tensor& h, at::Tensor& c,
                    at::Tensor& cprev, at::Tensor& tanh_c, at::Tensor& hprev, bool save) {
  const int64_t T = d.T, B = d.B, E = d.E, H = d.H, G4 = 4 * H, HE = H + E;
  at::Tensor pre = temporary<scalar_t, kPre>({B, G4}, x.options());
  at::Tensor step_input = temporary<scalar_t, kStepInput>({B, HE}, x.options());  // [h | x_s]
  scalar_t *PR = pre.data_ptr<scalar_t>(), *HX = step_input.data_ptr<scalar_t>(), *CS = c.data_ptr<scalar_t>();
  scalar_t* H_out = h.data_ptr<scalar_t>();
  const scalar_t* X = x.data_ptr<scalar_t>();
  scalar_t* GT = gates.numel() > 0 ? gates.data_ptr<scalar_t>() : nullptr;  // the activations (none: not kept)
  scalar_t* Y = y.data_ptr<scalar_t>();
  scalar_t* CP = save ? cprev.data_ptr<scalar_t>() : nullptr;
  scalar_t* TC = save ? tanh_c.data_ptr<scalar_t>() : nullptr;
  scalar_t* HP = save ? hprev.data_ptr<scalar_t>() : nullptr;
  // [w_hh^T ; w_ih^T] [H + E, 4H]
  const RightOperand<scalar_t> w(G4, {w_hh.data_ptr<scalar_t>(), H, H}, {w_ih.data_ptr<scalar_t>(), E, E});
  const KernelSet<scalar_t>& ks = kernels<scalar_t>();
  const bool h0_zero = all_zero(H_out, B * H);  // the usual h0: step 0 has no recurrent term
  for (int64_t b = 0; b < B; ++b) std::copy(H_out + b * H, H_out + (b + 1) * H, HX + b * HE);
  for (int64_t s = 0; s < T; ++s) {
    for (int64_t b = 0; b < B; ++b) std::copy(X + (s * B + b) * E, X + (s * B + b + 1) * E, HX + b * HE + H);
    if (s == 0 && h0_zero) {
      w.multiply(false, B, HX + H, HE, 0, PR, G4, H);  // the x part only
    } else {
      w.multiply(false, B, HX, HE, 0, PR, G4);
    }
    at::parallel_for(0, B, row_grain(H), [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t f = s * B + b;
        scalar_t* h_b = HX + b * HE;
        scalar_t* c_b = CS + b * H;
        ks.lstm_fwd_row(PR + b * G4, nullptr, bias, GT != nullptr ? GT + f * G4 : nullptr, c_b, c_b, h_b, h_b,
                        Y + f * H, save ? CP + f * H : nullptr, save ? TC + f * H : nullptr,
                        save ? HP + f * H : nullptr, H);
      }
    });
  }
  for (int64_t b = 0; b < B; ++b) std::copy(HX + b * HE, HX + b * HE + H, H_out + b * H);
}

// Forward of one layer and direction. gates [T, B, 4H] receives the
// activations (zero at padded positions when lengths vary), y [T, B, H] the
// outputs (zero-filled by the caller when lengths vary), h/c [B, H] the state
// (initial in, final out); with saving, cprev/tanh_c/hprev [T, B, H].
template <typename scalar_t>
void lstm_fwd_impl(const Dims& d, const Schedule& sc, const at::Tensor& x, const at::Tensor& w_ih,
                   const at::Tensor& w_hh, const scalar_t* bias, at::Tensor& gates, at::Tensor& y, at::Tensor& h,
                   at::Tensor& c, at::Tensor& cprev, at::Tensor& tanh_c, at::Tensor& hprev, bool save) {
  const int64_t B = d.B, E = d.E, H = d.H, G4 = 4 * H, P = sc.total();
  const auto opts = x.options();
  if (runs_fused<scalar_t>(sc, d)) {
    lstm_fwd_fused<scalar_t>(d, x, w_ih, w_hh, bias, gates, y, h, c, cprev, tanh_c, hprev, save);
    return;
  }
  // The input projection of the pairs that run, packed: [P, E] @ w_ih^T (in
  // place in gates when the packed order is the [T, B] order).
  at::Tensor xp = sc.identity ? x : temporary<scalar_t, kInputs>({P, E}, opts);
  if (!sc.identity) sc.gather(x.data_ptr<scalar_t>(), E, xp.data_ptr<scalar_t>());
  at::Tensor gp = sc.identity ? gates : temporary<scalar_t, kGradGates>({P, G4}, opts);
  scalar_t* GP = gp.data_ptr<scalar_t>();
  gemm<scalar_t>(false, true, P, G4, E, 1, xp.data_ptr<scalar_t>(), E, w_ih.data_ptr<scalar_t>(), E, 0, GP, G4);
  // The state in sorted order; the recurrent product of the running rows.
  at::Tensor hs = at::empty({B, H}, opts), cs = at::empty({B, H}, opts);
  at::Tensor rec = temporary<scalar_t, kRec>({B, G4}, opts);
  sc.sort_rows(h.data_ptr<scalar_t>(), H, hs.data_ptr<scalar_t>());
  sc.sort_rows(c.data_ptr<scalar_t>(), H, cs.data_ptr<scalar_t>());
  scalar_t *HS = hs.data_ptr<scalar_t>(), *CS = cs.data_ptr<scalar_t>(), *R = rec.data_ptr<scalar_t>();
  scalar_t* GT = gates.data_ptr<scalar_t>();
  scalar_t* Y = y.data_ptr<scalar_t>();
  scalar_t* CP = save ? cprev.data_ptr<scalar_t>() : nullptr;
  scalar_t* TC = save ? tanh_c.data_ptr<scalar_t>() : nullptr;
  scalar_t* HP = save ? hprev.data_ptr<scalar_t>() : nullptr;
  const RightOperand<scalar_t> whh_t(true, H, G4, w_hh.data_ptr<scalar_t>(), H);  // w_hh^T [H, 4H]
  const KernelSet<scalar_t>& ks = kernels<scalar_t>();
  const bool h0_zero = all_zero(HS, B * H);
  for (int64_t s = 0; s < sc.T && sc.n[s] > 0; ++s) {
    const int64_t ns = sc.n[s];
    const bool no_rec = s == 0 && h0_zero;  // h0 @ w_hh^T = 0
    prefetch_row(GP + sc.off[s] * G4, G4);
    if (!no_rec) whh_t.multiply(false, ns, HS, H, 0, R, G4);
    at::parallel_for(0, ns, row_grain(H), [&](int64_t j0, int64_t j1) {
      for (int64_t j = j0; j < j1; ++j) {
        const int64_t f = sc.flat(j, s);
        if (j + 1 < j1) prefetch_row(GP + (sc.off[s] + j + 1) * G4, G4);
        scalar_t* h_j = HS + j * H;
        scalar_t* c_j = CS + j * H;
        ks.lstm_fwd_row(GP + (sc.off[s] + j) * G4, no_rec ? nullptr : R + j * G4, bias, GT + f * G4, c_j, c_j, h_j,
                        h_j, Y + f * H, save ? CP + f * H : nullptr, save ? TC + f * H : nullptr,
                        save ? HP + f * H : nullptr, H);
      }
    });
  }
  sc.unsort_rows(HS, H, h.data_ptr<scalar_t>());
  sc.unsort_rows(CS, H, c.data_ptr<scalar_t>());
}

// Backward of one layer and direction: dh/dc [B, H] carry the state
// gradients (grad of h_n/c_n in, of h0/c0 out); dx [T, B, E] (zero-filled by
// the caller when lengths vary), dw_ih, dw_hh, db.
template <typename scalar_t>
void lstm_bwd_impl(const Dims& d, const Schedule& sc, const at::Tensor& grad_y, const at::Tensor& x,
                   const at::Tensor& w_ih, const at::Tensor& w_hh, const at::Tensor& gates, const at::Tensor& cprev,
                   const at::Tensor& tanh_c, const at::Tensor& hprev, at::Tensor& dh, at::Tensor& dc, at::Tensor& dx,
                   at::Tensor& dw_ih, at::Tensor& dw_hh, at::Tensor& db) {
  const int64_t B = d.B, E = d.E, H = d.H, G4 = 4 * H, P = sc.total();
  const auto opts = x.options();
  // Pre-activation gradients of the pairs that ran, packed step-major: in
  // panels (float on the tile kernels, H a multiple of 16, H >= 128), the one
  // layout that every product reading them takes -- as the left operand of
  // the carried gradient and the input gradient, as the right operand of the
  // weight gradients. The rows first and a copy into panels step by step (the
  // weight gradients' operand) cost a second 5 MB stream of stores at the
  // Sentence-VAE size: 0.4-0.5 ms of a 27 ms fwd+bwd on a Xeon. A left
  // operand in panels is always copied into register tiles, as rows of 4H >=
  // 512 values are anyway (should_pack_a); shorter rows are read in place,
  // so below H = 128 dgates stays in rows [P, 4H] (in panels, the DailyDialog
  // size H = 32 ran 5% slower), and the weight gradients read those rows in
  // place as panels when 4H is a multiple of 32 (rows_as_panels). Packing
  // them after the loop instead cost 5% of the DailyDialog size's fwd+bwd
  // (pack_panels in a profile): that stack 1.42 -> 1.45x nn.LSTM (AVX-512)
  // and 1.45 -> 1.46x (AVX2) in alternating runs on a Xeon.
  const bool in_panels = std::is_same_v<scalar_t, float> && tiled_float_gemm() && H % 16 == 0 && H >= 128;
  const int64_t dg_ps = in_panels ? P * kPanelWidth : 0;  // panel stride
  at::Tensor dgp = temporary<scalar_t, kGradGates>({P, G4}, opts);
  scalar_t* DG = dgp.data_ptr<scalar_t>();
  // Row j of dgates (packed order): its first value.
  auto dg_row = [&](int64_t j) { return DG + j * (in_panels ? kPanelWidth : G4); };
  // Rows [j0, j0 + rows) of dgates in panels.
  auto dg_panels = [&](int64_t j0, int64_t rows) {
    return PanelView<scalar_t>{DG + j0 * kPanelWidth, rows, G4, dg_ps};
  };
  at::Tensor dhs = at::empty({B, H}, opts), dcs = at::empty({B, H}, opts);
  sc.sort_rows(dh.data_ptr<scalar_t>(), H, dhs.data_ptr<scalar_t>());
  sc.sort_rows(dc.data_ptr<scalar_t>(), H, dcs.data_ptr<scalar_t>());
  scalar_t *DH = dhs.data_ptr<scalar_t>(), *DC = dcs.data_ptr<scalar_t>();
  const scalar_t *GT = gates.data_ptr<scalar_t>(), *CP = cprev.data_ptr<scalar_t>(),
                 *TC = tanh_c.data_ptr<scalar_t>(), *GY = grad_y.data_ptr<scalar_t>();
  const RightOperand<scalar_t> whh(false, G4, H, w_hh.data_ptr<scalar_t>(), H);  // dh = dgates @ w_hh
  const KernelSet<scalar_t>& ks = kernels<scalar_t>();
  // The bias gradient, summed by the rows as they go (no second pass over
  // the T * B rows of dgates): the rows of a step run in blocks of `grain`;
  // block k sums its rows into step[k], then step[k] into total[k] (sums
  // B + T deep rather than B * T, the same whatever the number of threads).
  const int64_t grain = row_grain(H), blocks = (B + grain - 1) / grain;
  std::vector<scalar_t> db_total(static_cast<size_t>(blocks * G4), scalar_t(0));
  std::vector<scalar_t> db_step(static_cast<size_t>(blocks * G4));
  scalar_t *DBT = db_total.data(), *DBS = db_step.data();
  const bool prefetch = prefetch_saved_rows();
  for (int64_t s = sc.T - 1; s >= 0; --s) {
    const int64_t ns = sc.n[s];
    if (ns == 0) continue;
    at::parallel_for(0, (ns + grain - 1) / grain, 1, [&](int64_t k0, int64_t k1) {
      for (int64_t k = k0; k < k1; ++k) {
        scalar_t *step = DBS + k * G4, *total = DBT + k * G4;
        std::fill(step, step + G4, scalar_t(0));
        const int64_t j0 = k * grain, j1 = std::min(ns, j0 + grain);
        for (int64_t j = j0; j < j1; ++j) {
          const int64_t f = sc.flat(j, s);
          if (prefetch && j + 1 < j1) {
            const int64_t fn = sc.flat(j + 1, s);
            prefetch_row(GT + fn * G4, G4);
            prefetch_row(CP + fn * H, H);
            prefetch_row(TC + fn * H, H);
            prefetch_row(GY + fn * H, H);
          }
          ks.lstm_bwd_row(GT + f * G4, CP + f * H, TC + f * H, GY + f * H, DH + j * H, DC + j * H,
                          dg_row(sc.off[s] + j), dg_ps, step, H);
        }
        for (int64_t i = 0; i < G4; ++i) total[i] += step[i];
      }
    });
    // The running rows' carried gradient; finished rows keep theirs (their state was held).
    if (in_panels) {
      whh.multiply(dg_panels(sc.off[s], ns), 0, DH, H);
    } else {
      whh.multiply(false, ns, DG + sc.off[s] * G4, G4, 0, DH, H);
    }
  }
  sc.unsort_rows(DH, H, dh.data_ptr<scalar_t>());
  sc.unsort_rows(DC, H, dc.data_ptr<scalar_t>());
  // Input and weight gradients as large products over the pairs that ran:
  // dx = dgates @ w_ih, dw_ih = dgates^T @ x, dw_hh = dgates^T @ hprev (x and
  // hprev gathered into the packed order when it is not the [T, B] order).
  at::Tensor dxp = sc.identity ? dx : temporary<scalar_t, kGradInputs>({P, E}, opts);
  if (in_panels) {
    const RightOperand<scalar_t> wih(false, G4, E, w_ih.data_ptr<scalar_t>(), E);
    wih.multiply(dg_panels(0, P), 0, dxp.data_ptr<scalar_t>(), E);
  } else {
    gemm<scalar_t>(false, false, P, E, G4, 1, DG, G4, w_ih.data_ptr<scalar_t>(), E, 0, dxp.data_ptr<scalar_t>(), E);
  }
  if (!sc.identity) sc.scatter(dxp.data_ptr<scalar_t>(), E, dx.data_ptr<scalar_t>());
  at::Tensor xs = sc.identity ? x : temporary<scalar_t, kInputs>({P, E}, opts);
  at::Tensor hs = sc.identity ? hprev : temporary<scalar_t, kHidden>({P, H}, opts);
  if (!sc.identity) {
    sc.gather(x.data_ptr<scalar_t>(), E, xs.data_ptr<scalar_t>());
    sc.gather(hprev.data_ptr<scalar_t>(), H, hs.data_ptr<scalar_t>());
  }
  // Transposed, dw^T = [x | hprev]^T @ dgates: dgates is the right operand of
  // both (prepared once, 4H columns: no partial column group), x and hprev are
  // read in place; the two [*, 4H] results are transposed into dw_ih, dw_hh.
  // (dgates^T @ [x | hprev] instead prepares the larger dgates as the left
  // operand, for E + H columns: 1-2 ms slower at the Sentence-VAE size.)
  // The first step's hprev rows are h0: all zero (the usual h0), they add
  // nothing to dw_hh and are left out of its product.
  at::Tensor dwt = temporary<scalar_t, kWeightGradT>({E + H, G4}, opts);
  scalar_t* DWT = dwt.data_ptr<scalar_t>();
  const scalar_t* HS = hs.data_ptr<scalar_t>();
  const int64_t k0 = all_zero(HS, sc.n[0] * H) ? sc.n[0] : 0;  // packed rows of step 0: [0, n[0])
  // dgates in panels, or its rows read in place as panels: no copy of it for
  // these products (in_panels implies 4H a multiple of 32).
  const bool dgates_as_panels = std::is_same_v<scalar_t, float> && tiled_float_gemm() && G4 % kPanelWidth == 0;
  if constexpr (std::is_same_v<scalar_t, float>) {
    if (dgates_as_panels) {
      auto dg_from = [&](int64_t j0) {  // rows [j0, P) of dgates
        return in_panels ? dg_panels(j0, P - j0) : rows_as_panels<float>(DG + j0 * G4, P - j0, G4, G4);
      };
      gemm_panels(true, E, xs.data_ptr<float>(), E, dg_from(0), 0, DWT, G4);
      gemm_panels(true, H, HS + k0 * H, H, dg_from(k0), 0, DWT + E * G4, G4);
    }
  }
  if (!dgates_as_panels) {
    const RightOperand<scalar_t> dgates(false, P, G4, DG, G4);
    dgates.multiply(true, E, xs.data_ptr<scalar_t>(), E, 0, DWT, G4);
    dgates.multiply(true, H, HS + k0 * H, H, 0, DWT + E * G4, G4, k0);
  }
  ks.transpose(E, G4, DWT, G4, dw_ih.data_ptr<scalar_t>(), E);
  ks.transpose(H, G4, DWT + E * G4, G4, dw_hh.data_ptr<scalar_t>(), H);
  scalar_t* DB = db.data_ptr<scalar_t>();
  std::copy(DBT, DBT + G4, DB);
  for (int64_t k = 1; k < blocks; ++k)
    for (int64_t i = 0; i < G4; ++i) DB[i] += DBT[k * G4 + i];
}

using FwdOut = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// The saved activations of a layer (the block below) up to this size come
// from the thread's pool (blas.h: pooled_empty): at the DailyDialog size
// (B64 T20 H32, ~1.1 MB a layer) at::empty's blocks were trimmed from glibc's
// heap top when backward freed them and page-faulted in again on the next
// call (~670 faults per fwd+bwd of the 2-layer stack, a third of its time;
// pooled: none; in a fresh process fwd+bwd 1.37x -> 1.9x nn.LSTM on a Xeon,
// alternating builds). Larger blocks stay with at::empty: freeing one raises glibc's mmap
// threshold to its size (up to 32 MB), which keeps the call's other
// multi-MB tensors (outputs, input and weight gradients) on the heap; with
// the Sentence-VAE size's 9 MB block from the pool they were mmapped and
// faulted in on every call instead (0 -> ~920 faults per fwd+bwd).
constexpr int64_t kPooledSavedBytes = int64_t(4) << 20;

// lstm_fwd; keep_gates false (the stack's forward without gradients) leaves
// gates empty where the activations need no buffer (the fused full-batch
// path): T * B * 4H values neither allocated nor written.
// h_n, c_n (contiguous [B, H], or undefined: allocated here) receive the final state.
FwdOut lstm_fwd_layer(const at::Tensor& x, const at::Tensor& h0, const at::Tensor& c0, const at::Tensor& w_ih,
                      const at::Tensor& w_hh, const c10::optional<at::Tensor>& b_ih,
                      const c10::optional<at::Tensor>& b_hh, const c10::optional<at::Tensor>& lengths, bool reverse,
                      bool need_grad, bool keep_gates, at::Tensor h_n = {}, at::Tensor c_n = {},
                      at::Tensor* block = nullptr) {
  const Dims d = check_lstm_args(x, h0, c0, w_ih, w_hh);
  const auto xc = x.contiguous();
  const auto wi = w_ih.contiguous();
  const auto wh = w_hh.contiguous();
  const auto bias = combined_bias(b_ih, b_hh, d.H, x.scalar_type());
  const RowLengths len_t(lengths, d.B, d.T);
  const int64_t* len = len_t.data();
  const bool full = all_full(len, d.B, d.T);
  const Schedule sc(len, d.T, d.B, reverse);
  const auto opts = x.options();
  const bool fused = x.scalar_type() == at::kFloat ? runs_fused<float>(sc, d) : runs_fused<double>(sc, d);
  // What backward reads: the activations [T, B, 4H] (zero at padded
  // positions when the packed order is not the [T, B] order) and cprev,
  // tanh_c, hprev [T, B, H] (zero at padded positions). With `block` (the
  // stack's forward) they are consecutive parts of one tensor, written to
  // *block: one allocation of 7 T B H values instead of four of a few MB --
  // four such blocks freed after backward made glibc trim its heap top and
  // page-fault them in again on the next call (4,000 faults, 20% of a
  // Sentence-VAE size fwd+bwd in a process that ran nothing else).
  const bool with_gates = keep_gates || !fused;
  const int64_t TB = d.T * d.B, gate_values = with_gates ? TB * 4 * d.H : 0, saved_values = need_grad ? TB * d.H : 0;
  if (block != nullptr) {
    const int64_t n = gate_values + 3 * saved_values;
    *block = n * static_cast<int64_t>(x.element_size()) <= kPooledSavedBytes ? pooled_empty(n, opts) : at::empty({n}, opts);
  }
  auto part = [&](int64_t offset, int64_t width, bool zero) {
    if (width == 0) return at::empty({0}, opts);
    at::Tensor t = block != nullptr ? part_of(*block, offset, {d.T, d.B, width}) : at::empty({d.T, d.B, width}, opts);
    if (zero) std::memset(t.data_ptr(), 0, static_cast<size_t>(t.numel() * t.element_size()));
    return t;
  };
  auto gates = part(0, with_gates ? 4 * d.H : 0, !sc.identity);
  auto cprev = part(gate_values, need_grad ? d.H : 0, !full);
  auto tanh_c = part(gate_values + saved_values, need_grad ? d.H : 0, !full);
  auto hprev = part(gate_values + 2 * saved_values, need_grad ? d.H : 0, !full);
  auto y = full ? at::empty({d.T, d.B, d.H}, opts) : at::zeros({d.T, d.B, d.H}, opts);
  auto h = h_n.defined() ? h_n : at::empty({d.B, d.H}, opts);
  auto c = c_n.defined() ? c_n : at::empty({d.B, d.H}, opts);
  copy_or_zero(h0, h, "h0");
  copy_or_zero(c0, c, "c0");
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "fastvae_lstm_fwd", [&] {
    lstm_fwd_impl<scalar_t>(d, sc, xc, wi, wh, bias.defined() ? bias.data_ptr<scalar_t>() : nullptr, gates, y, h, c,
                            cprev, tanh_c, hprev, need_grad);
  });
  return {y, h, c, gates, cprev, tanh_c, hprev};
}

}  // namespace

FwdOut lstm_fwd_cpu(const at::Tensor& x, const at::Tensor& h0, const at::Tensor& c0, const at::Tensor& w_ih,
                    const at::Tensor& w_hh, const c10::optional<at::Tensor>& b_ih,
                    const c10::optional<at::Tensor>& b_hh, const c10::optional<at::Tensor>& lengths, bool reverse,
                    bool need_grad) {
  return lstm_fwd_layer(x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, reverse, need_grad, true);
}

using BwdOut = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

namespace {

// lstm_bwd; grad_hn/grad_cn may be undefined (zero); dh0, dc0 (contiguous
// [B, H], or undefined: allocated here) receive the initial state's gradients.
BwdOut lstm_bwd_layer(const at::Tensor& grad_y, const at::Tensor& grad_hn, const at::Tensor& grad_cn,
                      const at::Tensor& x, const at::Tensor& w_ih, const at::Tensor& w_hh,
                      const c10::optional<at::Tensor>& lengths, const at::Tensor& gates, const at::Tensor& cprev,
                      const at::Tensor& tanh_c, const at::Tensor& hprev, bool reverse, at::Tensor dh0 = {},
                      at::Tensor dc0 = {}) {
  FASTVAE_CHECK_DIM(x, 3);
  FASTVAE_CHECK_DIM(w_hh, 2);
  const Dims d{x.size(0), x.size(1), x.size(2), w_hh.size(1)};
  FASTVAE_CHECK_SHAPE(w_ih, 4 * d.H, d.E);
  FASTVAE_CHECK_SHAPE(grad_y, d.T, d.B, d.H);
  if (grad_hn.defined()) FASTVAE_CHECK_SHAPE(grad_hn, d.B, d.H);
  if (grad_cn.defined()) FASTVAE_CHECK_SHAPE(grad_cn, d.B, d.H);
  FASTVAE_CHECK_SHAPE(gates, d.T, d.B, 4 * d.H);
  FASTVAE_CHECK_SHAPE(cprev, d.T, d.B, d.H);
  FASTVAE_CHECK_SHAPE(tanh_c, d.T, d.B, d.H);
  FASTVAE_CHECK_SHAPE(hprev, d.T, d.B, d.H);
  const RowLengths len_t(lengths, d.B, d.T);
  const Schedule sc(len_t.data(), d.T, d.B, reverse);
  const auto opts = x.options();
  auto dh = dh0.defined() ? dh0 : at::empty({d.B, d.H}, opts);
  auto dc = dc0.defined() ? dc0 : at::empty({d.B, d.H}, opts);
  copy_or_zero(grad_hn, dh, "grad_hn");
  copy_or_zero(grad_cn, dc, "grad_cn");
  auto dx = sc.identity ? at::empty({d.T, d.B, d.E}, opts) : at::zeros({d.T, d.B, d.E}, opts);
  auto dw_ih = at::empty({4 * d.H, d.E}, opts);
  auto dw_hh = at::empty({4 * d.H, d.H}, opts);
  auto db = at::empty({4 * d.H}, opts);
  const auto gy = grad_y.contiguous();
  const auto xc = x.contiguous();
  const auto wi = w_ih.contiguous();
  const auto wh = w_hh.contiguous();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "fastvae_lstm_bwd", [&] {
    lstm_bwd_impl<scalar_t>(d, sc, gy, xc, wi, wh, gates.contiguous(), cprev.contiguous(), tanh_c.contiguous(),
                            hprev.contiguous(), dh, dc, dx, dw_ih, dw_hh, db);
  });
  return {dx, dh, dc, dw_ih, dw_hh, db};
}

}  // namespace

BwdOut lstm_bwd_cpu(const at::Tensor& grad_y, const at::Tensor& grad_hn, const at::Tensor& grad_cn,
                    const at::Tensor& x, const at::Tensor& w_ih, const at::Tensor& w_hh,
                    const c10::optional<at::Tensor>& lengths, const at::Tensor& gates, const at::Tensor& cprev,
                    const at::Tensor& tanh_c, const at::Tensor& hprev, bool reverse) {
  return lstm_bwd_layer(grad_y, grad_hn, grad_cn, x, w_ih, w_hh, lengths, gates, cprev, tanh_c, hprev, reverse);
}

// ------------------------------------------------------------ the stack --
//
// lstm_stack runs every layer and direction of an nn.LSTM-like stack in one
// op call (one autograd node, csrc/lstm_ops.cpp) by calling the layer
// kernels above. params follow nn.LSTM's flat order: per layer, per
// direction, w_ih, w_hh (and b_ih, b_hh with biases). saved (need_grad) holds
// per layer and direction one block [7 T B H] (gates [T, B, 4H], then cprev,
// tanh_c, hprev [T, B, H]: lstm_fwd_layer), then the input of every layer
// above the first (the output of the one below).

namespace {

struct Stack {
  int64_t L, D, H;
  bool bias;
  int64_t per_layer() const { return bias ? 4 : 2; }
  const at::Tensor& param(at::TensorList params, int64_t l, int64_t d, int64_t k) const {
    return params[(l * D + d) * per_layer() + k];
  }
  c10::optional<at::Tensor> bias_param(at::TensorList params, int64_t l, int64_t d, int64_t k) const {
    if (!bias) return c10::nullopt;
    return param(params, l, d, k);
  }
};

Stack check_stack(const at::Tensor& x, const at::Tensor& h0, const at::Tensor& c0, at::TensorList params,
                  int64_t num_layers, bool bidirectional) {
  FASTVAE_CHECK_DIM(x, 3);
  TORCH_CHECK_VALUE(num_layers >= 1, "fastvae.lstm_stack: argument 'num_layers' must be >= 1, got ", num_layers);
  const int64_t D = bidirectional ? 2 : 1;
  const int64_t n = static_cast<int64_t>(params.size());
  TORCH_CHECK_VALUE(n == num_layers * D * 2 || n == num_layers * D * 4, "fastvae.lstm_stack: argument 'params' must hold ",
                    num_layers * D * 2, " (no biases) or ", num_layers * D * 4, " tensors for ", num_layers,
                    " layer(s) x ", D, " direction(s), got ", n);
  const Stack st{num_layers, D, 0, n == num_layers * D * 4};
  const at::Tensor& w_hh0 = st.param(params, 0, 0, 1);
  FASTVAE_CHECK_DIM(w_hh0, 2);
  const int64_t H = w_hh0.size(1), B = x.size(1);
  FASTVAE_CHECK_SHAPE(h0, num_layers * D, B, H);
  FASTVAE_CHECK_SHAPE(c0, num_layers * D, B, H);
  for (int64_t l = 0; l < num_layers; ++l) {
    const int64_t E = l == 0 ? x.size(2) : D * H;
    for (int64_t d = 0; d < D; ++d) {
      const at::Tensor& w_ih = st.param(params, l, d, 0);
      const at::Tensor& w_hh = st.param(params, l, d, 1);
      TORCH_CHECK_VALUE(w_ih.dim() == 2 && w_ih.size(0) == 4 * H && w_ih.size(1) == E,
                        "fastvae.lstm_stack: w_ih of layer ", l, " direction ", d, " must have shape [", 4 * H, ", ",
                        E, "], got ", w_ih.sizes());
      TORCH_CHECK_VALUE(w_hh.dim() == 2 && w_hh.size(0) == 4 * H && w_hh.size(1) == H,
                        "fastvae.lstm_stack: w_hh of layer ", l, " direction ", d, " must have shape [", 4 * H, ", ",
                        H, "], got ", w_hh.sizes());
    }
  }
  return {num_layers, D, H, st.bias};
}

at::Tensor zeros_if_undefined(const at::Tensor& t, at::IntArrayRef shape, const at::TensorOptions& opts) {
  return t.defined() ? t : at::zeros(shape, opts);
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, std::vector<at::Tensor>> lstm_stack_fwd_cpu(
    const at::Tensor& x, const at::Tensor& h0, const at::Tensor& c0, at::TensorList params,
    const c10::optional<at::Tensor>& lengths, int64_t num_layers, bool bidirectional, bool need_grad) {
  const Stack st = check_stack(x, h0, c0, params, num_layers, bidirectional);
  std::vector<at::Tensor> saved, inputs;
  const auto opts = x.options();
  at::Tensor h_n = at::empty({st.L * st.D, x.size(1), st.H}, opts), c_n = at::empty_like(h_n);
  at::Tensor input = x;
  for (int64_t l = 0; l < st.L; ++l) {
    std::vector<at::Tensor> outputs;
    for (int64_t d = 0; d < st.D; ++d) {
      const int64_t k = l * st.D + d;
      at::Tensor block;
      const FwdOut out =
          lstm_fwd_layer(input, h0[k], c0[k], st.param(params, l, d, 0), st.param(params, l, d, 1),
                         st.bias_param(params, l, d, 2), st.bias_param(params, l, d, 3), lengths, d == 1, need_grad,
                         need_grad, h_n[k], c_n[k], need_grad ? &block : nullptr);
      outputs.push_back(std::get<0>(out));
      if (need_grad) saved.push_back(block);
    }
    input = st.D == 1 ? outputs[0] : at::cat(outputs, 2);
    if (need_grad && l + 1 < st.L) inputs.push_back(input);
  }
  saved.insert(saved.end(), inputs.begin(), inputs.end());
  return {input, h_n, c_n, saved};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, std::vector<at::Tensor>> lstm_stack_bwd_cpu(
    const c10::optional<at::Tensor>& grad_y, const c10::optional<at::Tensor>& grad_hn,
    const c10::optional<at::Tensor>& grad_cn, const at::Tensor& x, const at::Tensor& h0, at::TensorList params,
    const c10::optional<at::Tensor>& lengths, at::TensorList saved, int64_t num_layers, bool bidirectional) {
  const Stack st = check_stack(x, h0, h0, params, num_layers, bidirectional);
  TORCH_CHECK_VALUE(static_cast<int64_t>(saved.size()) == st.L * st.D + st.L - 1,
                    "fastvae.lstm_stack_bwd: argument 'saved' must hold ", st.L * st.D + st.L - 1,
                    " tensors (from lstm_stack_fwd with need_grad), got ", saved.size());
  const int64_t T = x.size(0), B = x.size(1), H = st.H;
  // A layer and direction's saved block: gates [T, B, 4H], cprev, tanh_c, hprev [T, B, H], one after the other.
  auto saved_parts = [&](int64_t k) {
    const at::Tensor& block = saved[k];
    const int64_t TB = T * B;
    TORCH_CHECK_VALUE(block.dim() == 1 && block.numel() == 7 * TB * H && block.is_contiguous(),
                      "fastvae.lstm_stack_bwd: argument 'saved' entry ", k, " must be a contiguous 1-d tensor of ",
                      7 * TB * H, " values (from lstm_stack_fwd with need_grad), got shape ", block.sizes());
    auto part = [&](int64_t offset, int64_t width) { return part_of(block, offset, {T, B, width}); };
    return std::array<at::Tensor, 4>{part(0, 4 * H), part(4 * TB * H, H), part(5 * TB * H, H), part(6 * TB * H, H)};
  };
  const auto opts = x.options();
  at::Tensor g = zeros_if_undefined(grad_y.value_or(at::Tensor()), {T, B, st.D * H}, opts);
  // The state gradients: per layer and direction a [B, H] slice, or undefined (zero).
  auto slices = [&](const c10::optional<at::Tensor>& grad, const char* name) {
    std::vector<at::Tensor> out(st.L * st.D);
    if (!grad.has_value() || !grad->defined()) return out;
    const std::vector<int64_t> shape{st.L * st.D, B, H};
    TORCH_CHECK_VALUE(grad->sizes() == at::IntArrayRef(shape), "fastvae: argument '", name, "' must have shape ",
                      at::IntArrayRef(shape), ", got ", grad->sizes());
    for (int64_t k = 0; k < st.L * st.D; ++k) out[k] = (*grad)[k];
    return out;
  };
  const std::vector<at::Tensor> ghn = slices(grad_hn, "grad_hn"), gcn = slices(grad_cn, "grad_cn");
  std::vector<at::Tensor> dparams(params.size());
  at::Tensor dh0 = at::empty({st.L * st.D, B, H}, opts), dc0 = at::empty_like(dh0);
  for (int64_t l = st.L - 1; l >= 0; --l) {
    const at::Tensor& input = l == 0 ? x : saved[st.L * st.D + l - 1];
    at::Tensor dx;
    for (int64_t d = 0; d < st.D; ++d) {
      const int64_t k = l * st.D + d;
      const at::Tensor gy = st.D == 1 ? g : g.narrow(2, d * H, H).contiguous();
      const auto parts = saved_parts(k);
      auto [dx_d, dh, dc, dw_ih, dw_hh, db] =
          lstm_bwd_layer(gy, ghn[k], gcn[k], input, st.param(params, l, d, 0), st.param(params, l, d, 1), lengths,
                         parts[0], parts[1], parts[2], parts[3], d == 1, dh0[k], dc0[k]);
      const int64_t p = k * st.per_layer();
      dparams[p] = dw_ih;
      dparams[p + 1] = dw_hh;
      if (st.bias) {
        dparams[p + 2] = db;
        dparams[p + 3] = contiguous_copy(db);  // two outputs never alias
      }
      dx = d == 0 ? dx_d : dx + dx_d;
    }
    g = dx;
  }
  return {g, dh0, dc0, dparams};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> lstm_stack_cpu(const at::Tensor& x, const at::Tensor& h0,
                                                             const at::Tensor& c0, at::TensorList params,
                                                             const c10::optional<at::Tensor>& lengths,
                                                             int64_t num_layers, bool bidirectional) {
  auto [y, h, c, saved] = lstm_stack_fwd_cpu(x, h0, c0, params, lengths, num_layers, bidirectional, false);
  return {y, h, c};
}

std::tuple<at::Tensor, at::Tensor> lstm_cell_cpu(const at::Tensor& x, const at::Tensor& h,
                                                 const at::Tensor& c, const at::Tensor& w_ih,
                                                 const at::Tensor& w_hh,
                                                 const c10::optional<at::Tensor>& b_ih,
                                                 const c10::optional<at::Tensor>& b_hh) {
  FASTVAE_CHECK_DIM(x, 2);
  FASTVAE_CHECK_DIM(w_hh, 2);
  FASTVAE_CHECK_FLOAT(x);
  const int64_t B = x.size(0), E = x.size(1), H = w_hh.size(1);
  FASTVAE_CHECK_SHAPE(w_ih, 4 * H, E);
  FASTVAE_CHECK_SHAPE(w_hh, 4 * H, H);
  FASTVAE_CHECK_SHAPE(h, B, H);
  FASTVAE_CHECK_SHAPE(c, B, H);
  for (const at::Tensor* t : {&h, &c, &w_ih, &w_hh}) {
    TORCH_CHECK_TYPE(t->scalar_type() == x.scalar_type(), "fastvae.lstm_cell: all tensors must have x's dtype ",
                     x.scalar_type(), ", got ", t->scalar_type());
  }
  const auto xc = x.contiguous(), hc = h.contiguous(), cc = c.contiguous();
  const auto wi = w_ih.contiguous(), wh = w_hh.contiguous();
  const auto bias = combined_bias(b_ih, b_hh, H, x.scalar_type());
  auto pre = at::empty({B, 4 * H}, x.options());
  auto h_out = at::empty({B, H}, x.options());
  auto c_out = at::empty({B, H}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "fastvae_lstm_cell", [&] {
    scalar_t* P = pre.data_ptr<scalar_t>();
    gemm<scalar_t>(false, true, B, 4 * H, E, 1, xc.data_ptr<scalar_t>(), E,
                   wi.data_ptr<scalar_t>(), E, 0, P, 4 * H);
    gemm<scalar_t>(false, true, B, 4 * H, H, 1, hc.data_ptr<scalar_t>(), H,
                   wh.data_ptr<scalar_t>(), H, 1, P, 4 * H);
    const scalar_t* bp = bias.defined() ? bias.data_ptr<scalar_t>() : nullptr;
    const KernelSet<scalar_t>& ks = kernels<scalar_t>();
    const scalar_t* cp = cc.data_ptr<scalar_t>();
    scalar_t* hp = h_out.data_ptr<scalar_t>();
    scalar_t* cnp = c_out.data_ptr<scalar_t>();
    at::parallel_for(0, B, row_grain(H), [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b)
        ks.lstm_fwd_row(P + b * 4 * H, nullptr, bp, nullptr, cp + b * H, cnp + b * H, nullptr, hp + b * H, nullptr,
                        nullptr, nullptr, nullptr, H);
    });
  });
  return {h_out, c_out};
}

TORCH_LIBRARY_IMPL(fastvae, CPU, m) {
  m.impl("lstm_fwd", &lstm_fwd_cpu);
  m.impl("lstm_bwd", &lstm_bwd_cpu);
  m.impl("lstm_cell", &lstm_cell_cpu);
  m.impl("lstm_stack", &lstm_stack_cpu);
  m.impl("lstm_stack_fwd", &lstm_stack_fwd_cpu);
  m.impl("lstm_stack_bwd", &lstm_stack_bwd_cpu);
}

}  // namespace cpu
}  // namespace fastvae
