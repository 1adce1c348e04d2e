// Operator schemas of the Gaussian KL divergence (fastvae.ops.gaussian_kl) and
// its autograd.
//
// CPU kernels: csrc/cpu/gaussian_kl_cpu.cpp (on the KL row loops of
// csrc/cpu/latent_common.h); Triton: kernels/gaussian_kl.py (registered from
// fastvae/ops/gaussian_kl.py as *_triton ops, with the fake kernels).
// Shapes: B = batch, Z = latent size. Every [B, Z] tensor of one call has the
// same shape and floating dtype; the CPU kernels take float32/float64, any
// strides. Non-finite values in the float inputs raise ValueError naming the
// argument; so do negative free_bits and mismatched shapes.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <tuple>

#include "autograd_common.h"

TORCH_LIBRARY_FRAGMENT(fastvae, m) {
  // Per-example KL(N(mu_q, e^logvar_q) || N(mu_p, e^logvar_p)) summed over Z.
  //   mu_q, logvar_q [B,Z]; mu_p, logvar_p [B,Z] or both None (N(0, I) prior).
  //   free_bits >= 0: a latent dim j whose batch-mean KL is below free_bits
  //   contributes the constant free_bits to every example (0 disables this).
  // Returns kl [B] and active bool [Z] (false where dim j was clamped; [0]
  // when free_bits == 0), which the backward needs.
  m.def(
      "gaussian_kl(Tensor mu_q, Tensor logvar_q, Tensor? mu_p, Tensor? logvar_p, float free_bits) "
      "-> (Tensor, Tensor)");
  // Gradients of gaussian_kl: grad_kl [B] -> d mu_q, d logvar_q [B,Z] and
  // d mu_p, d logvar_p [B,Z] ([0] when the prior is N(0, I)).
  m.def(
      "gaussian_kl_bwd(Tensor grad_kl, Tensor mu_q, Tensor logvar_q, Tensor? mu_p, Tensor? logvar_p, "
      "Tensor active) -> (Tensor, Tensor, Tensor, Tensor)");
}

// Autograd at the Autograd key: one C++ graph node per call whose backward
// calls gaussian_kl_bwd (why C++: csrc/autograd_common.h).
namespace fastvae {
namespace {

using KlSig = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, const OptTensor&,
                                                 const OptTensor&, double);
using KlBwdSig = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>(
    const at::Tensor&, const at::Tensor&, const at::Tensor&, const OptTensor&, const OptTensor&, const at::Tensor&);

struct GaussianKlFn : public torch::autograd::Function<GaussianKlFn> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& mu_q, const at::Tensor& logvar_q,
                               const OptTensor& mu_p, const OptTensor& logvar_p, double free_bits) {
    static const auto op = op_handle<KlSig>("fastvae::gaussian_kl");
    at::Tensor kl, active;
    {
      at::AutoDispatchBelowADInplaceOrView guard;
      std::tie(kl, active) = op.call(mu_q, logvar_q, mu_p, logvar_p, free_bits);
    }
    ctx->save_for_backward({mu_q, logvar_q, mu_p.value_or(at::Tensor()), logvar_p.value_or(at::Tensor()), active});
    ctx->mark_non_differentiable({active});
    ctx->set_materialize_grads(false);
    return {kl, active};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto bwd = op_handle<KlBwdSig>("fastvae::gaussian_kl_bwd");
    first_order_only("gaussian_kl");
    at::AutoDispatchBelowADInplaceOrView guard;  // straight to the kernels (no autograd fallback, no boxing)
    const auto s = ctx->get_saved_variables();
    const bool prior = s[2].defined();
    if (!grads[0].defined()) return variable_list(5);
    auto [d_mq, d_lq, d_mp, d_lp] = bwd.call(grads[0], s[0], s[1], maybe(s[2]), maybe(s[3]), s[4]);
    if (!prior) d_mp = d_lp = at::Tensor();
    return {d_mq, d_lq, d_mp, d_lp, at::Tensor()};
  }
};

std::tuple<at::Tensor, at::Tensor> gaussian_kl_autograd(const at::Tensor& mu_q, const at::Tensor& logvar_q,
                                                        const OptTensor& mu_p, const OptTensor& logvar_p,
                                                        double free_bits) {
  auto out = GaussianKlFn::apply(mu_q, logvar_q, mu_p, logvar_p, free_bits);
  return {out[0], out[1]};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastvae, Autograd, m) { m.impl("gaussian_kl", &gaussian_kl_autograd); }

}  // namespace fastvae
