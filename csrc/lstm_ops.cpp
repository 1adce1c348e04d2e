// Operator schemas of the fused LSTM (fastvae.ops.lstm: lstm, lstm_stack,
// lstm_cell) and the autograd of lstm_stack.
//
// CPU kernels: csrc/cpu/lstm_cpu.cpp; Triton: kernels/lstm.py (registered from
// fastvae/ops/lstm.py as fastvae::lstm_*_triton, which also registers the fake
// kernels and lstm_fwd's autograd). Shapes use T = time, B = batch,
// E = input size, H = hidden size.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <tuple>
#include <vector>

#include "autograd_common.h"

TORCH_LIBRARY_FRAGMENT(fastvae, m) {
  // One LSTM layer in one direction over a padded, time-major sequence.
  //   x [T,B,E], h0/c0 [B,H], w_ih [4H,E], w_hh [4H,H], b_ih/b_hh [4H],
  //   lengths int64 [B] on CPU with values in 1..T (None: all T).
  // Returns y [T,B,H] (zero past each length), h_n, c_n [B,H] and what the
  // backward needs: gates [T,B,4H], cprev/tanh_c/hprev [T,B,H] (empty when
  // need_grad is false).
  m.def(
      "lstm_fwd(Tensor x, Tensor h0, Tensor c0, Tensor w_ih, Tensor w_hh, Tensor? b_ih, "
      "Tensor? b_hh, Tensor? lengths, bool reverse, bool need_grad) -> "
      "(Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  // Gradients of lstm_fwd: dx [T,B,E], dh0, dc0 [B,H], dw_ih [4H,E],
  // dw_hh [4H,H], db [4H] (the gradient of b_ih and of b_hh alike).
  m.def(
      "lstm_bwd(Tensor grad_y, Tensor grad_hn, Tensor grad_cn, Tensor x, Tensor w_ih, "
      "Tensor w_hh, Tensor? lengths, Tensor gates, Tensor cprev, Tensor tanh_c, Tensor hprev, "
      "bool reverse) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  // A whole nn.LSTM-like stack in one call (one autograd node):
  //   x [T,B,E], h0/c0 [L*D,B,H] (layer-major, D = 2 if bidirectional),
  //   params per layer and direction: w_ih [4H,E_l], w_hh [4H,H] (and b_ih,
  //   b_hh [4H] when the stack has biases), nn.LSTM's flat order; lengths as
  //   for lstm_fwd. Returns y [T,B,D*H] (the top layer, zero past each length),
  //   h_n, c_n [L*D,B,H]. No dropout between layers.
  m.def(
      "lstm_stack(Tensor x, Tensor h0, Tensor c0, Tensor[] params, Tensor? lengths, int num_layers, "
      "bool bidirectional) -> (Tensor, Tensor, Tensor)");
  // lstm_stack and what its backward needs (saved: per layer and direction
  // one block [7*T*B*H] -- gates [T,B,4H], then cprev, tanh_c, hprev [T,B,H]
  // -- then the input of each layer above the first; empty when need_grad is
  // false).
  m.def(
      "lstm_stack_fwd(Tensor x, Tensor h0, Tensor c0, Tensor[] params, Tensor? lengths, int num_layers, "
      "bool bidirectional, bool need_grad) -> (Tensor, Tensor, Tensor, Tensor[])");
  // Gradients of lstm_stack (None gradients count as zero; h0 gives the state
  // shape): dx [T,B,E], dh0, dc0 [L*D,B,H], dparams in params' order.
  m.def(
      "lstm_stack_bwd(Tensor? grad_y, Tensor? grad_hn, Tensor? grad_cn, Tensor x, Tensor h0, Tensor[] params, "
      "Tensor? lengths, Tensor[] saved, int num_layers, bool bidirectional) -> (Tensor, Tensor, Tensor, Tensor[])");
  // One decoding step: x [B,E], h/c [B,H] -> (h', c') [B,H].
  m.def(
      "lstm_cell(Tensor x, Tensor h, Tensor c, Tensor w_ih, Tensor w_hh, Tensor? b_ih, "
      "Tensor? b_hh) -> "
      "(Tensor, Tensor)");
}

// Autograd of lstm_stack: one native graph node for a whole stack of LSTM
// layers and directions, whose backward calls lstm_stack_bwd. At the
// DailyDialog size (B64 T20 E=H=32, 2 layers) a Python node per layer cost
// about as much as a third of the math (csrc/autograd_common.h).
namespace fastvae {
namespace {

using Stack3 = std::tuple<at::Tensor, at::Tensor, at::Tensor>;
using StackOut = std::tuple<at::Tensor, at::Tensor, at::Tensor, std::vector<at::Tensor>>;
using StackSig = Stack3(const at::Tensor&, const at::Tensor&, const at::Tensor&, at::TensorList, const OptTensor&,
                        int64_t, bool);
using FwdSig = StackOut(const at::Tensor&, const at::Tensor&, const at::Tensor&, at::TensorList, const OptTensor&,
                        int64_t, bool, bool);
using BwdSig = StackOut(const OptTensor&, const OptTensor&, const OptTensor&, const at::Tensor&, const at::Tensor&,
                        at::TensorList, const OptTensor&, at::TensorList, int64_t, bool);

struct LstmStackFn : public torch::autograd::Function<LstmStackFn> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& h0, const at::Tensor& c0,
                               at::TensorList params, const OptTensor& lengths, int64_t num_layers,
                               bool bidirectional) {
    static const auto fwd = op_handle<FwdSig>("fastvae::lstm_stack_fwd");
    StackOut out;
    {
      at::AutoDispatchBelowADInplaceOrView guard;
      out = fwd.call(x, h0, c0, params, lengths, num_layers, bidirectional, true);
    }
    auto& [y, h_n, c_n, saved] = out;
    variable_list keep{x, h0};
    keep.insert(keep.end(), params.begin(), params.end());
    keep.insert(keep.end(), saved.begin(), saved.end());
    ctx->save_for_backward(keep);
    ctx->saved_data["params"] = static_cast<int64_t>(params.size());
    ctx->saved_data["num_layers"] = num_layers;
    ctx->saved_data["bidirectional"] = bidirectional;
    ctx->saved_data["lengths"] = lengths;
    return {y, h_n, c_n};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto bwd = op_handle<BwdSig>("fastvae::lstm_stack_bwd");
    first_order_only("lstm_stack");
    const auto s = ctx->get_saved_variables();
    const int64_t n = ctx->saved_data["params"].toInt();
    const std::vector<at::Tensor> params(s.begin() + 2, s.begin() + 2 + n), saved(s.begin() + 2 + n, s.end());
    const OptTensor lengths = ctx->saved_data["lengths"].toOptional<at::Tensor>();
    at::AutoDispatchBelowADInplaceOrView guard;  // straight to the kernel (no autograd fallback, no boxing)
    auto [dx, dh0, dc0, dparams] = bwd.call(maybe(grads[0]), maybe(grads[1]), maybe(grads[2]), s[0], s[1], params,
                                            lengths, saved, ctx->saved_data["num_layers"].toInt(),
                                            ctx->saved_data["bidirectional"].toBool());
    variable_list out{dx, dh0, dc0};
    out.insert(out.end(), dparams.begin(), dparams.end());
    out.insert(out.end(), {at::Tensor(), at::Tensor(), at::Tensor()});  // lengths, num_layers, bidirectional
    return out;
  }
};

bool any_requires_grad(const at::Tensor& x, const at::Tensor& h0, const at::Tensor& c0, at::TensorList params) {
  if (x.requires_grad() || h0.requires_grad() || c0.requires_grad()) return true;
  for (const auto& p : params)
    if (p.requires_grad()) return true;
  return false;
}

Stack3 lstm_stack_autograd(const at::Tensor& x, const at::Tensor& h0, const at::Tensor& c0, at::TensorList params,
                           const OptTensor& lengths, int64_t num_layers, bool bidirectional) {
  if (!at::GradMode::is_enabled() || !any_requires_grad(x, h0, c0, params)) {
    static const auto op = op_handle<StackSig>("fastvae::lstm_stack");
    at::AutoDispatchBelowADInplaceOrView guard;
    return op.call(x, h0, c0, params, lengths, num_layers, bidirectional);
  }
  auto out = LstmStackFn::apply(x, h0, c0, params, lengths, num_layers, bidirectional);
  return {out[0], out[1], out[2]};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastvae, Autograd, m) { m.impl("lstm_stack", &lstm_stack_autograd); }

}  // namespace fastvae
