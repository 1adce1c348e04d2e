// Autograd of lstm_stack (csrc/ops.cpp): one native graph node for a whole
// stack of LSTM layers and directions, whose backward calls lstm_stack_bwd.
// At the DailyDialog size (B64 T20 E=H=32, 2 layers) a Python node per layer
// cost about as much as a third of the math (csrc/autograd_common.h).
#include <ATen/ATen.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <optional>
#include <tuple>
#include <vector>

#include "autograd_common.h"

namespace fastvae {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using Opt = std::optional<at::Tensor>;
using Stack3 = std::tuple<at::Tensor, at::Tensor, at::Tensor>;
using StackOut = std::tuple<at::Tensor, at::Tensor, at::Tensor, std::vector<at::Tensor>>;
using StackSig = Stack3(const at::Tensor&, const at::Tensor&, const at::Tensor&, at::TensorList, const Opt&, int64_t,
                        bool);
using FwdSig = StackOut(const at::Tensor&, const at::Tensor&, const at::Tensor&, at::TensorList, const Opt&, int64_t,
                        bool, bool);
using BwdSig = StackOut(const Opt&, const Opt&, const Opt&, const at::Tensor&, const at::Tensor&, at::TensorList,
                        const Opt&, at::TensorList, int64_t, bool);

struct LstmStackFn : public torch::autograd::Function<LstmStackFn> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& h0, const at::Tensor& c0,
                               at::TensorList params, const Opt& lengths, int64_t num_layers, bool bidirectional) {
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
    const Opt lengths = ctx->saved_data["lengths"].toOptional<at::Tensor>();
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
                           const Opt& lengths, int64_t num_layers, bool bidirectional) {
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
