// Operator schemas of the SLCVAE latent loss (fastvae.ops.kl_label_loss) and
// its autograd.
//
// CPU kernels: csrc/cpu/kl_label_loss_cpu.cpp (on the KL row loops of
// csrc/cpu/latent_common.h, which fold the label term into the KL pass);
// Triton: kernels/kl_label_loss.py (registered from
// fastvae/ops/kl_label_loss.py as *_triton ops, with the fake kernels).
// Shapes, dtypes and errors as for gaussian_kl (csrc/gaussian_kl_ops.cpp).
#include <ATen/ATen.h>
#include <torch/library.h>

#include <tuple>

#include "autograd_common.h"

TORCH_LIBRARY_FRAGMENT(fastvae, m) {
  // The latent part of the SLCVAE loss in one pass:
  //   kl = gaussian_kl(mu_q, logvar_q, mu_p, logvar_p, free_bits)   [B]
  //   label = sum_j (z - z_label)^2                                  [B]
  //   total = kl_weight * kl + label_weight * label                  [B]
  // z, z_label [B,Z]. Returns (total, kl, label, active [Z] or [0]).
  m.def(
      "kl_label_loss(Tensor mu_q, Tensor logvar_q, Tensor? mu_p, Tensor? logvar_p, Tensor z, "
      "Tensor z_label, float kl_weight, float label_weight, float free_bits) "
      "-> (Tensor, Tensor, Tensor, Tensor)");
  // Gradients of kl_label_loss from grad_total, grad_kl, grad_label [B] (any
  // stride; None counts as zero):
  // d mu_q, d logvar_q, d mu_p, d logvar_p, d z [B,Z] (prior grads [0] when
  // the prior is N(0, I)). z_label gets none: it is a fixed target.
  m.def(
      "kl_label_loss_bwd(Tensor? grad_total, Tensor? grad_kl, Tensor? grad_label, Tensor mu_q, "
      "Tensor logvar_q, Tensor? mu_p, Tensor? logvar_p, Tensor z, Tensor z_label, float kl_weight, "
      "float label_weight, Tensor active) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
}

// Autograd at the Autograd key: one C++ graph node per call whose backward
// calls kl_label_loss_bwd (why C++: csrc/autograd_common.h).
namespace fastvae {
namespace {

using KllSig = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>(
    const at::Tensor&, const at::Tensor&, const OptTensor&, const OptTensor&, const at::Tensor&, const at::Tensor&,
    double, double, double);
using KllBwdSig = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>(
    const OptTensor&, const OptTensor&, const OptTensor&, const at::Tensor&, const at::Tensor&, const OptTensor&,
    const OptTensor&, const at::Tensor&, const at::Tensor&, double, double, const at::Tensor&);

struct KlLabelLossFn : public torch::autograd::Function<KlLabelLossFn> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& mu_q, const at::Tensor& logvar_q,
                               const OptTensor& mu_p, const OptTensor& logvar_p, const at::Tensor& z,
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
    at::AutoDispatchBelowADInplaceOrView guard;  // straight to the kernels (no autograd fallback, no boxing)
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
    const at::Tensor& mu_q, const at::Tensor& logvar_q, const OptTensor& mu_p, const OptTensor& logvar_p,
    const at::Tensor& z, const at::Tensor& z_label, double kl_weight, double label_weight, double free_bits) {
  auto out = KlLabelLossFn::apply(mu_q, logvar_q, mu_p, logvar_p, z, z_label, kl_weight, label_weight, free_bits);
  return {out[0], out[1], out[2], out[3]};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastvae, Autograd, m) { m.impl("kl_label_loss", &kl_label_loss_autograd); }

}  // namespace fastvae
