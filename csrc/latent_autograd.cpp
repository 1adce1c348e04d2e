// Autograd of the latent ops (csrc/latent_ops.cpp), registered in C++ at the
// Autograd key: one C++ graph node per call whose backward calls the *_bwd op
// (why C++: csrc/autograd_common.h -- these ops are tiny, B=64, Z=8 in the
// SLCVAE, so a step is dominated by per-call overhead).
#include <ATen/ATen.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "autograd_common.h"

namespace fastvae {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using Opt = std::optional<at::Tensor>;

// ------------------------------------------------------ reparameterize --

using ReparamSig = at::Tensor(const at::Tensor&, const at::Tensor&, const Opt&, const Opt&);

struct ReparameterizeFn : public torch::autograd::Function<ReparameterizeFn> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& mu, const at::Tensor& logvar,
                            const Opt& eps, const Opt& seed) {
    static const auto op = op_handle<ReparamSig>("fastvae::reparameterize");
    at::Tensor z;
    {
      at::AutoDispatchBelowADInplaceOrView guard;
      z = op.call(mu, logvar, eps, seed);
    }
    // Only logvar and the seed (or the given eps): the backward regenerates eps.
    ctx->save_for_backward({logvar, eps.value_or(at::Tensor()), seed.value_or(at::Tensor())});
    return z;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto bwd = op_handle<ReparamSig>("fastvae::reparameterize_bwd");
    first_order_only("reparameterize");
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& logvar = saved[0];
    const at::Tensor& eps = saved[1];
    const at::Tensor& grad_z = grads[0];
    at::Tensor grad_logvar, grad_eps;
    if (ctx->needs_input_grad(1)) grad_logvar = bwd.call(grad_z, logvar, maybe(eps), maybe(saved[2]));
    if (ctx->needs_input_grad(2)) grad_eps = at::mul(grad_z, at::exp(at::mul(logvar, 0.5)));
    // dz/dmu is the identity.
    return {grad_z, grad_logvar, grad_eps, at::Tensor()};
  }
};

at::Tensor reparameterize_autograd(const at::Tensor& mu, const at::Tensor& logvar, const Opt& eps,
                                   const Opt& seed) {
  return ReparameterizeFn::apply(mu, logvar, eps, seed);
}

// --------------------------------------------------------- gaussian_kl --

using KlSig = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, const Opt&,
                                                 const Opt&, double);
using KlBwdSig = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>(
    const at::Tensor&, const at::Tensor&, const at::Tensor&, const Opt&, const Opt&, const at::Tensor&);

struct GaussianKlFn : public torch::autograd::Function<GaussianKlFn> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& mu_q, const at::Tensor& logvar_q,
                               const Opt& mu_p, const Opt& logvar_p, double free_bits) {
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
    const auto s = ctx->get_saved_variables();
    const bool prior = s[2].defined();
    if (!grads[0].defined()) return variable_list(5);
    auto [d_mq, d_lq, d_mp, d_lp] = bwd.call(grads[0], s[0], s[1], maybe(s[2]), maybe(s[3]), s[4]);
    if (!prior) d_mp = d_lp = at::Tensor();
    return {d_mq, d_lq, d_mp, d_lp, at::Tensor()};
  }
};

std::tuple<at::Tensor, at::Tensor> gaussian_kl_autograd(const at::Tensor& mu_q, const at::Tensor& logvar_q,
                                                        const Opt& mu_p, const Opt& logvar_p,
                                                        double free_bits) {
  auto out = GaussianKlFn::apply(mu_q, logvar_q, mu_p, logvar_p, free_bits);
  return {out[0], out[1]};
}

// ------------------------------------------------------- kl_label_loss --

using KllSig = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>(
    const at::Tensor&, const at::Tensor&, const Opt&, const Opt&, const at::Tensor&, const at::Tensor&, double,
    double, double);
using KllBwdSig = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>(
    const Opt&, const Opt&, const Opt&, const at::Tensor&, const at::Tensor&, const Opt&,
    const Opt&, const at::Tensor&, const at::Tensor&, double, double, const at::Tensor&);

struct KlLabelLossFn : public torch::autograd::Function<KlLabelLossFn> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& mu_q, const at::Tensor& logvar_q,
                               const Opt& mu_p, const Opt& logvar_p, const at::Tensor& z,
                               const at::Tensor& z_label, double kl_weight, double label_weight,
                               double free_bits) {
    static const auto op = op_handle<KllSig>("fastvae::kl_label_loss");
    at::Tensor total, kl, label, active;
    {
      at::AutoDispatchBelowADInplaceOrView guard;
      std::tie(total, kl, label, active) =
          op.call(mu_q, logvar_q, mu_p, logvar_p, z, z_label, kl_weight, label_weight, free_bits);
    }
    ctx->save_for_backward(
        {mu_q, logvar_q, mu_p.value_or(at::Tensor()), logvar_p.value_or(at::Tensor()), z, z_label, active});
    // Unused outputs (kl, label for logging) get no zero-filled gradient.
    ctx->set_materialize_grads(false);
    ctx->saved_data["kl_weight"] = kl_weight;
    ctx->saved_data["label_weight"] = label_weight;
    ctx->mark_non_differentiable({active});
    return {total, kl, label, active};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto bwd = op_handle<KllBwdSig>("fastvae::kl_label_loss_bwd");
    first_order_only("kl_label_loss");
    const auto s = ctx->get_saved_variables();
    if (!grads[0].defined() && !grads[1].defined() && !grads[2].defined()) return variable_list(9);
    const bool prior = s[2].defined();
    auto [d_mq, d_lq, d_mp, d_lp, d_z] =
        bwd.call(maybe(grads[0]), maybe(grads[1]), maybe(grads[2]), s[0], s[1], maybe(s[2]), maybe(s[3]), s[4], s[5],
                 ctx->saved_data["kl_weight"].toDouble(), ctx->saved_data["label_weight"].toDouble(), s[6]);
    if (!prior) d_mp = d_lp = at::Tensor();
    // z_label is the labeling network's fixed target: never a gradient.
    return {d_mq, d_lq, d_mp, d_lp, d_z, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> kl_label_loss_autograd(
    const at::Tensor& mu_q, const at::Tensor& logvar_q, const Opt& mu_p, const Opt& logvar_p, const at::Tensor& z,
    const at::Tensor& z_label, double kl_weight, double label_weight, double free_bits) {
  auto out = KlLabelLossFn::apply(mu_q, logvar_q, mu_p, logvar_p, z, z_label, kl_weight, label_weight, free_bits);
  return {out[0], out[1], out[2], out[3]};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastvae, Autograd, m) {
  m.impl("reparameterize", &reparameterize_autograd);
  m.impl("gaussian_kl", &gaussian_kl_autograd);
  m.impl("kl_label_loss", &kl_label_loss_autograd);
}

}  // namespace fastvae
