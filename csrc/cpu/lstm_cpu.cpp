// CPU kernels of the fused LSTM (one layer, one direction).
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
// its state. This is exactly nn.LSTM on a PackedSequence.
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

#include <algorithm>
#include <vector>

#include "../checks.h"
#include "blas.h"
#include "kernels.h"

namespace fastvae {
namespace cpu {
namespace {

// Rows per parallel chunk: keep ~32k gate values per task so small batches
// stay on one thread (a parallel region costs microseconds per step).
int64_t row_grain(int64_t H) { return std::max<int64_t>(1, 32768 / (4 * H)); }

// The cell arithmetic of one row (one sequence) lives in the tile kernels
// (csrc/cpu/tile_kernels.h: lstm_fwd_row, lstm_bwd_row, lstm_cell_row),
// compiled for this CPU's ISA; the loops here pick the rows of a step.

struct StepRows {
  const int64_t* lengths;
  int64_t B, H, step;
  bool reverse;
  // Time position of row b at this step, or -1 when the row is finished.
  int64_t pos(int64_t b) const {
    const int64_t L = lengths[b];
    if (step >= L) return -1;
    return reverse ? L - 1 - step : step;
  }
};

template <typename scalar_t>
void fwd_rows(const KernelSet<scalar_t>& ks, const StepRows& rows, int64_t b0, int64_t b1, scalar_t* gates,
              const scalar_t* rec, const scalar_t* bias, scalar_t* h, scalar_t* c, scalar_t* y, scalar_t* cprev,
              scalar_t* tanh_c, scalar_t* hprev) {
  const int64_t B = rows.B, H = rows.H;
  const bool save = cprev != nullptr;
  for (int64_t b = b0; b < b1; ++b) {
    const int64_t p = rows.pos(b);
    if (p < 0) continue;
    const int64_t o1 = p * B + b;  // [T, B] index
    ks.lstm_fwd_row(gates + o1 * 4 * H, rec + b * 4 * H, bias, h + b * H, c + b * H, y + o1 * H,
                    save ? cprev + o1 * H : nullptr, save ? tanh_c + o1 * H : nullptr,
                    save ? hprev + o1 * H : nullptr, H);
  }
}

// Backward rows of a step: dgates at each row's position; dgate_step (or
// null) also receives them side by side, when positions scatter.
template <typename scalar_t>
void bwd_rows(const KernelSet<scalar_t>& ks, const StepRows& rows, int64_t b0, int64_t b1, const scalar_t* gates,
              const scalar_t* cprev, const scalar_t* tanh_c, const scalar_t* grad_y, const scalar_t* dh, scalar_t* dc,
              scalar_t* dgates, scalar_t* dgate_step) {
  const int64_t B = rows.B, H = rows.H;
  for (int64_t b = b0; b < b1; ++b) {
    const int64_t p = rows.pos(b);
    if (p < 0) continue;
    const int64_t o1 = p * B + b;
    scalar_t* out = dgates + o1 * 4 * H;
    ks.lstm_bwd_row(gates + o1 * 4 * H, cprev + o1 * H, tanh_c + o1 * H, grad_y + o1 * H, dh + b * H, dc + b * H,
                    out, H);
    if (dgate_step != nullptr) std::copy(out, out + 4 * H, dgate_step + b * 4 * H);
  }
}

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
  if (b_ih.has_value() && b_hh.has_value()) return (*b_ih + *b_hh).contiguous();
  if (b_ih.has_value()) return b_ih->contiguous();
  if (b_hh.has_value()) return b_hh->contiguous();
  return at::Tensor();
}

// Lengths as an int64 CPU tensor (all T when absent), validated.
at::Tensor lengths_or_full(const c10::optional<at::Tensor>& lengths, int64_t B, int64_t T) {
  if (!lengths.has_value()) return at::full({B}, T, at::TensorOptions().dtype(at::kLong));
  check_lengths(*lengths, B, T);
  return lengths->contiguous();
}

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

int64_t count_active(const int64_t* len, int64_t B, int64_t step) {
  int64_t n = 0;
  for (int64_t b = 0; b < B; ++b) n += len[b] > step;
  return n;
}

// ---------------------------------------------------------------- drivers --

template <typename scalar_t>
void lstm_fwd_impl(const Dims& d, const at::Tensor& x, const at::Tensor& w_ih,
                   const at::Tensor& w_hh, const scalar_t* bias, const int64_t* len,
                   bool reverse, at::Tensor& gates, at::Tensor& y, at::Tensor& h,
                   at::Tensor& c, at::Tensor& cprev, at::Tensor& tanh_c, at::Tensor& hprev,
                   bool save) {
  const int64_t T = d.T, B = d.B, E = d.E, H = d.H;
  scalar_t* G = gates.data_ptr<scalar_t>();
  // Input projection of every step in one GEMM: [T*B, E] @ w_ih^T.
  gemm<scalar_t>(false, true, T * B, 4 * H, E, 1, x.data_ptr<scalar_t>(), E,
                 w_ih.data_ptr<scalar_t>(), E, 0, G, 4 * H);
  auto rec = at::empty({B, 4 * H}, x.options());
  scalar_t* R = rec.data_ptr<scalar_t>();
  scalar_t* hp = h.data_ptr<scalar_t>();
  scalar_t* cp = c.data_ptr<scalar_t>();
  // Recurrent product h @ w_hh^T: w_hh [4H, H] is B^T of a [H, 4H] operand.
  const RightOperand<scalar_t> whh_t(true, H, 4 * H, w_hh.data_ptr<scalar_t>(), H);
  scalar_t* yp = y.data_ptr<scalar_t>();
  scalar_t* cpp = save ? cprev.data_ptr<scalar_t>() : nullptr;
  scalar_t* tcp = save ? tanh_c.data_ptr<scalar_t>() : nullptr;
  scalar_t* hpp = save ? hprev.data_ptr<scalar_t>() : nullptr;
  const int64_t grain = row_grain(H);
  const KernelSet<scalar_t>& ks = kernels<scalar_t>();
  for (int64_t s = 0; s < T; ++s) {
    if (count_active(len, B, s) == 0) break;
    whh_t.multiply(false, B, hp, H, 0, R, 4 * H);
    StepRows rows{len, B, H, s, reverse};
    at::parallel_for(0, B, grain, [&](int64_t b0, int64_t b1) {
      fwd_rows<scalar_t>(ks, rows, b0, b1, G, R, bias, hp, cp, yp, cpp, tcp, hpp);
    });
  }
}

template <typename scalar_t>
void lstm_bwd_impl(const Dims& d, const at::Tensor& grad_y, const at::Tensor& x,
                   const at::Tensor& w_ih, const at::Tensor& w_hh, const int64_t* len,
                   bool reverse, const at::Tensor& gates, const at::Tensor& cprev,
                   const at::Tensor& tanh_c, const at::Tensor& hprev, at::Tensor& dgates,
                   at::Tensor& dh, at::Tensor& dc, at::Tensor& dx, at::Tensor& dw_ih,
                   at::Tensor& dw_hh, at::Tensor& db) {
  const int64_t T = d.T, B = d.B, E = d.E, H = d.H;
  const bool full = all_full(len, B, T);
  // Rows of one step sit side by side in dgates unless reversed sequences of
  // different lengths scatter them over positions; then gather per step.
  const bool scattered = reverse && !full;
  at::Tensor step_buf = scattered ? at::zeros({B, 4 * H}, x.options()) : at::Tensor();
  at::Tensor dh_new = full ? at::Tensor() : at::empty({B, H}, x.options());
  scalar_t* DG = dgates.data_ptr<scalar_t>();
  scalar_t* DGS = scattered ? step_buf.data_ptr<scalar_t>() : nullptr;
  scalar_t* dhp = dh.data_ptr<scalar_t>();
  scalar_t* dcp = dc.data_ptr<scalar_t>();
  // dh = dgates_step @ w_hh, w_hh [4H, H].
  const RightOperand<scalar_t> whh(false, 4 * H, H, w_hh.data_ptr<scalar_t>(), H);
  const int64_t grain = row_grain(H);
  const KernelSet<scalar_t>& ks = kernels<scalar_t>();
  for (int64_t s = T - 1; s >= 0; --s) {
    const int64_t active = count_active(len, B, s);
    if (active == 0) continue;
    StepRows rows{len, B, H, s, reverse};
    at::parallel_for(0, B, grain, [&](int64_t b0, int64_t b1) {
      bwd_rows<scalar_t>(ks, rows, b0, b1, gates.data_ptr<scalar_t>(), cprev.data_ptr<scalar_t>(),
                         tanh_c.data_ptr<scalar_t>(), grad_y.data_ptr<scalar_t>(), dhp, dcp, DG,
                         DGS);
    });
    const scalar_t* step =
        scattered ? DGS : DG + (reverse ? T - 1 - s : s) * B * 4 * H;
    if (active == B) {
      whh.multiply(false, B, step, 4 * H, 0, dhp, H);
    } else {
      // Finished rows keep their carried gradient (their state was held).
      scalar_t* tmp = dh_new.data_ptr<scalar_t>();
      whh.multiply(false, B, step, 4 * H, 0, tmp, H);
      for (int64_t b = 0; b < B; ++b)
        if (len[b] > s) std::copy(tmp + b * H, tmp + (b + 1) * H, dhp + b * H);
    }
  }
  // Weight and input gradients as large GEMMs over all T*B rows; both weight
  // gradients in one product, dgates^T @ [x | hprev], so dgates^T (the
  // transposed left operand, copied into tiles) is prepared once.
  const int64_t N = T * B;
  gemm<scalar_t>(false, false, N, E, 4 * H, 1, DG, 4 * H, w_ih.data_ptr<scalar_t>(), E, 0,
                 dx.data_ptr<scalar_t>(), E);
  const at::Tensor xh = at::cat({x.view({N, E}), hprev.view({N, H})}, 1);
  at::Tensor dw = at::empty({4 * H, E + H}, x.options());
  gemm<scalar_t>(true, false, 4 * H, E + H, N, 1, DG, 4 * H, xh.data_ptr<scalar_t>(), E + H, 0,
                 dw.data_ptr<scalar_t>(), E + H);
  dw_ih.copy_(dw.narrow(1, 0, E));
  dw_hh.copy_(dw.narrow(1, E, H));
  at::sum_out(db, dgates.view({N, 4 * H}), {0});
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
lstm_fwd_cpu(const at::Tensor& x, const at::Tensor& h0, const at::Tensor& c0,
             const at::Tensor& w_ih, const at::Tensor& w_hh,
             const c10::optional<at::Tensor>& b_ih, const c10::optional<at::Tensor>& b_hh,
             const c10::optional<at::Tensor>& lengths, bool reverse, bool need_grad) {
  const Dims d = check_lstm_args(x, h0, c0, w_ih, w_hh);
  const auto xc = x.contiguous();
  const auto wi = w_ih.contiguous();
  const auto wh = w_hh.contiguous();
  const auto bias = combined_bias(b_ih, b_hh, d.H, x.scalar_type());
  const auto len_t = lengths_or_full(lengths, d.B, d.T);
  const int64_t* len = len_t.data_ptr<int64_t>();
  const bool full = all_full(len, d.B, d.T);
  const auto opts = x.options();
  auto gates = at::empty({d.T, d.B, 4 * d.H}, opts);
  auto y = full ? at::empty({d.T, d.B, d.H}, opts) : at::zeros({d.T, d.B, d.H}, opts);
  auto h = h0.contiguous().clone();
  auto c = c0.contiguous().clone();
  auto make_saved = [&]() {
    if (!need_grad) return at::empty({0}, opts);
    return full ? at::empty({d.T, d.B, d.H}, opts) : at::zeros({d.T, d.B, d.H}, opts);
  };
  auto cprev = make_saved(), tanh_c = make_saved(), hprev = make_saved();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "fastvae_lstm_fwd", [&] {
    lstm_fwd_impl<scalar_t>(d, xc, wi, wh,
                            bias.defined() ? bias.data_ptr<scalar_t>() : nullptr, len,
                            reverse, gates, y, h, c, cprev, tanh_c, hprev, need_grad);
  });
  return {y, h, c, gates, cprev, tanh_c, hprev};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
lstm_bwd_cpu(const at::Tensor& grad_y, const at::Tensor& grad_hn, const at::Tensor& grad_cn,
             const at::Tensor& x, const at::Tensor& w_ih, const at::Tensor& w_hh,
             const c10::optional<at::Tensor>& lengths, const at::Tensor& gates, const at::Tensor& cprev,
             const at::Tensor& tanh_c, const at::Tensor& hprev, bool reverse) {
  FASTVAE_CHECK_DIM(x, 3);
  FASTVAE_CHECK_DIM(w_hh, 2);
  const Dims d{x.size(0), x.size(1), x.size(2), w_hh.size(1)};
  FASTVAE_CHECK_SHAPE(w_ih, 4 * d.H, d.E);
  FASTVAE_CHECK_SHAPE(grad_y, d.T, d.B, d.H);
  FASTVAE_CHECK_SHAPE(grad_hn, d.B, d.H);
  FASTVAE_CHECK_SHAPE(grad_cn, d.B, d.H);
  FASTVAE_CHECK_SHAPE(gates, d.T, d.B, 4 * d.H);
  FASTVAE_CHECK_SHAPE(cprev, d.T, d.B, d.H);
  FASTVAE_CHECK_SHAPE(tanh_c, d.T, d.B, d.H);
  FASTVAE_CHECK_SHAPE(hprev, d.T, d.B, d.H);
  const auto len_t = lengths_or_full(lengths, d.B, d.T);
  const int64_t* len = len_t.data_ptr<int64_t>();
  const auto opts = x.options();
  const bool full = all_full(len, d.B, d.T);
  auto dgates = full ? at::empty({d.T, d.B, 4 * d.H}, opts) : at::zeros({d.T, d.B, 4 * d.H}, opts);
  auto dh = grad_hn.contiguous().clone();
  auto dc = grad_cn.contiguous().clone();
  auto dx = at::empty({d.T, d.B, d.E}, opts);
  auto dw_ih = at::empty({4 * d.H, d.E}, opts);
  auto dw_hh = at::empty({4 * d.H, d.H}, opts);
  auto db = at::empty({4 * d.H}, opts);
  const auto gy = grad_y.contiguous();
  const auto xc = x.contiguous();
  const auto wi = w_ih.contiguous();
  const auto wh = w_hh.contiguous();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "fastvae_lstm_bwd", [&] {
    lstm_bwd_impl<scalar_t>(d, gy, xc, wi, wh, len, reverse, gates.contiguous(),
                            cprev.contiguous(), tanh_c.contiguous(), hprev.contiguous(), dgates,
                            dh, dc, dx, dw_ih, dw_hh, db);
  });
  return {dx, dh, dc, dw_ih, dw_hh, db};
}

// ------------------------------------------------------------ the stack --
//
// lstm_stack runs every layer and direction of an nn.LSTM-like stack in one
// op call (one autograd node, csrc/lstm_autograd.cpp) by calling the layer
// kernels above. params follow nn.LSTM's flat order: per layer, per
// direction, w_ih, w_hh (and b_ih, b_hh with biases). saved (need_grad) holds
// per layer and direction gates, cprev, tanh_c, hprev, then the input of
// every layer above the first (the output of the one below).

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
  std::vector<at::Tensor> h_n, c_n, saved, inputs;
  at::Tensor input = x;
  for (int64_t l = 0; l < st.L; ++l) {
    std::vector<at::Tensor> outputs;
    for (int64_t d = 0; d < st.D; ++d) {
      const int64_t k = l * st.D + d;
      auto [y, h, c, gates, cprev, tanh_c, hprev] =
          lstm_fwd_cpu(input, h0[k], c0[k], st.param(params, l, d, 0), st.param(params, l, d, 1),
                       st.bias_param(params, l, d, 2), st.bias_param(params, l, d, 3), lengths, d == 1, need_grad);
      outputs.push_back(y);
      h_n.push_back(h);
      c_n.push_back(c);
      if (need_grad) saved.insert(saved.end(), {gates, cprev, tanh_c, hprev});
    }
    input = st.D == 1 ? outputs[0] : at::cat(outputs, 2);
    if (need_grad && l + 1 < st.L) inputs.push_back(input);
  }
  saved.insert(saved.end(), inputs.begin(), inputs.end());
  return {input, at::stack(h_n), at::stack(c_n), saved};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, std::vector<at::Tensor>> lstm_stack_bwd_cpu(
    const c10::optional<at::Tensor>& grad_y, const c10::optional<at::Tensor>& grad_hn,
    const c10::optional<at::Tensor>& grad_cn, const at::Tensor& x, const at::Tensor& h0, at::TensorList params,
    const c10::optional<at::Tensor>& lengths, at::TensorList saved, int64_t num_layers, bool bidirectional) {
  const Stack st = check_stack(x, h0, h0, params, num_layers, bidirectional);
  TORCH_CHECK_VALUE(static_cast<int64_t>(saved.size()) == st.L * st.D * 4 + st.L - 1,
                    "fastvae.lstm_stack_bwd: argument 'saved' must hold ", st.L * st.D * 4 + st.L - 1,
                    " tensors (from lstm_stack_fwd with need_grad), got ", saved.size());
  const int64_t T = x.size(0), B = x.size(1), H = st.H;
  const auto opts = x.options();
  at::Tensor g = zeros_if_undefined(grad_y.value_or(at::Tensor()), {T, B, st.D * H}, opts);
  const at::Tensor ghn = zeros_if_undefined(grad_hn.value_or(at::Tensor()), {st.L * st.D, B, H}, opts);
  const at::Tensor gcn = zeros_if_undefined(grad_cn.value_or(at::Tensor()), {st.L * st.D, B, H}, opts);
  std::vector<at::Tensor> dparams(params.size()), dh0(st.L * st.D), dc0(st.L * st.D);
  for (int64_t l = st.L - 1; l >= 0; --l) {
    const at::Tensor& input = l == 0 ? x : saved[st.L * st.D * 4 + l - 1];
    at::Tensor dx;
    for (int64_t d = 0; d < st.D; ++d) {
      const int64_t k = l * st.D + d;
      const at::Tensor gy = st.D == 1 ? g : g.narrow(2, d * H, H).contiguous();
      auto [dx_d, dh, dc, dw_ih, dw_hh, db] =
          lstm_bwd_cpu(gy, ghn[k], gcn[k], input, st.param(params, l, d, 0), st.param(params, l, d, 1), lengths,
                       saved[4 * k], saved[4 * k + 1], saved[4 * k + 2], saved[4 * k + 3], d == 1);
      const int64_t p = k * st.per_layer();
      dparams[p] = dw_ih;
      dparams[p + 1] = dw_hh;
      if (st.bias) {
        dparams[p + 2] = db;
        dparams[p + 3] = db.clone();  // two outputs never alias
      }
      dh0[k] = dh;
      dc0[k] = dc;
      dx = d == 0 ? dx_d : dx + dx_d;
    }
    g = dx;
  }
  return {g, at::stack(dh0), at::stack(dc0), dparams};
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
      for (int64_t b = b0; b < b1; ++b) ks.lstm_cell_row(P + b * 4 * H, bp, cp + b * H, hp + b * H, cnp + b * H, H);
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
